// `pgshift run`: the replication session loop, signals and orderly shutdown.
#pragma once

#include "pgshift/config/config.hpp"

namespace pgshift::daemon {

/// Exit codes (SPEC section 1).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failure = 1;
inline constexpr int k_exit_usage = 2;
inline constexpr int k_exit_config = 78;

/// Runs the daemon in the foreground until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1).
/// Must be called from the main thread before any other thread is started.
int run(const config::Config& cfg);

} // namespace pgshift::daemon
