// The client side of the CLI: `status`, `lag`, `pause`, `resume`, `cutover`, `rollback`, `verify`, `finish`.
#pragma once

#include <string>

namespace pgshift::daemon {

struct ClientOptions {
    std::string config_path; ///< find the daemon from control.listen / control.token_file
    std::string url;         ///< or directly: http://host:port
    std::string token_file;  ///< with --url
    bool json = false;       ///< status: print the raw JSON
    bool wait = false;       ///< cutover/rollback/verify: follow the operation to its end
};

/// Runs one client command against the daemon's control plane. Returns the process exit code.
int run_client(const std::string& command, const ClientOptions& options);

} // namespace pgshift::daemon
