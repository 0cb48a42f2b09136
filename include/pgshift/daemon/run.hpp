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
/// `cfg` was loaded from `config_path`; SIGHUP loads that file again (reload.hpp).
/// Must be called from the main thread before any other thread is started.
int run(const config::Config& cfg, const std::string& config_path);

} // namespace pgshift::daemon
