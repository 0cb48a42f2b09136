// SIGHUP reload: which keys the daemon takes on at runtime, how each shows in the log, and the
// reload itself (run() calls reload_configuration on the main thread).
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/daemon/backoff.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace pgshift::control {
class ControlServer;
}

namespace pgshift::daemon {

class DaemonState;

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

/// What a reload may change at runtime, all owned by run() (main thread).
struct Live {
    config::Config& base;
    config::Config& reversed;
    std::string& token; ///< the bearer token the control plane checks now
    control::ControlServer& server;
    DaemonState& state;
    Backoff& backoff;
    bool notified_ready;
};

/// SIGHUP: loads `path` again. A file with any problem (or a token file that cannot be read)
/// changes nothing: every problem is logged and the running configuration stays as it was.
/// Otherwise the reloadable keys that changed are applied and logged, and each other changed
/// key is named as needing a restart. Streaming goes on throughout: sessions work on a copy of
/// the configuration, and a cutover holds reloads back until it ended.
void reload_configuration(const std::string& path, Live& live);

} // namespace pgshift::daemon
