// `pgshift run`: the replication session loop, signals (stop, reload) and orderly shutdown.
#pragma once

#include "pgshift/config/config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace pgshift::daemon {

/// Exit codes (SPEC section 1).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failure = 1;
inline constexpr int k_exit_usage = 2;
inline constexpr int k_exit_config = 78;

/// Runs the daemon in the foreground until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1).
/// `cfg` was loaded from `config_path`; SIGHUP loads that file again (see plan_reload).
/// Must be called from the main thread before any other thread is started.
int run(const config::Config& cfg, const std::string& config_path);

/// spdlog's name for a configured log level ("err" for error).
[[nodiscard]] const char* log_level_name(config::LogLevel level);

/// What a SIGHUP does with a new, valid configuration `fresh` while `live` runs: the keys the
/// daemon can take on at runtime are applied (`keys`, with one line each for the log: "log.level
/// info -> debug"); every other changed key is named with the value that stays ("apply.workers
/// changed: needs a restart, keeping 4"). Secrets (conninfos, commands) are never shown.
struct ReloadPlan {
    std::vector<std::string> keys;    ///< reloadable keys that changed, to apply_reload()
    std::vector<std::string> applied; ///< a log line per key in `keys`
    std::vector<std::string> kept;    ///< a log line per changed key that needs a restart
};
[[nodiscard]] ReloadPlan plan_reload(const config::Config& live, const config::Config& fresh);

/// Copies the values of `keys` (ReloadPlan::keys) from `fresh` into `to`, and nothing else: the
/// other members of `to` are not even written, so threads that read them meanwhile are safe.
void apply_reload(const std::vector<std::string>& keys, config::Config& to, const config::Config& fresh);

/// Whether the daemon can apply `key` at runtime. Every key the configuration table marks
/// reloadable must be one (a unit test holds the two together).
[[nodiscard]] bool reload_applies(std::string_view key);

} // namespace pgshift::daemon
