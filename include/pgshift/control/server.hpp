// The HTTP control plane of SPEC section 3: a small HTTP/1.1 server on its own thread.
//
// The header stays free of Asio and Beast (pimpl) so that the daemon's translation units do
// not pay for them; only src/control/server.cpp includes Beast.
#pragma once

#include "pgshift/control/status.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace pgshift::control {

/// Per-connection limits. The defaults are the production values; tests shorten the timeouts.
struct ServerLimits {
    /// From accept (or the first byte of a follow-up request) until the request header is complete.
    std::chrono::milliseconds header_timeout{10'000};
    /// From the end of the header until the body is complete.
    std::chrono::milliseconds body_timeout{10'000};
    /// How long a keep-alive connection may sit between requests.
    std::chrono::milliseconds idle_timeout{30'000};
    /// For writing one response; a client that does not read is dropped.
    std::chrono::milliseconds write_timeout{10'000};
    /// After a response that closes the connection, how long unread request bytes are drained
    /// so that the client receives the response instead of a TCP reset.
    std::chrono::milliseconds linger_timeout{2'000};
    std::size_t body_limit = 64 * 1024;  ///< larger bodies get 413
    std::uint32_t header_limit = 8 * 1024; ///< larger headers get 431
    /// Connections served at once. At the cap a new connection closes the one that has been
    /// idle (waiting for a request) longest; only if none is idle is the new one closed.
    std::size_t max_connections = 64;
};

/// Serves /livez, /readyz, /metrics and /v1/* from a StatusProvider.
///
/// Thread map: start() spawns one thread running a private io_context; every connection and
/// every handler runs on it. Handlers only call the provider (snapshot, alive, pause, resume),
/// which must not block. start(), stop() and the destructor are called from one owning thread.
class ControlServer {
public:
    /// `listen` is "host:port" ("127.0.0.1:8187", "[::1]:8187", "localhost:0"); port 0 picks a
    /// free port (see port()). An empty `token` disables authentication of POST requests.
    /// `provider` must outlive the server.
    ControlServer(std::string listen, std::string token, StatusProvider& provider, std::string version,
                  ServerLimits limits = {});
    ~ControlServer(); ///< calls stop()

    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    /// Binds and starts the server thread. Throws pgshift::ConfigError naming the address when it
    /// cannot be parsed, resolved or bound; throws pgshift::InternalError when called twice.
    void start();

    /// Closes the listener and every connection and joins the thread. Idempotent; a stopped
    /// server cannot be started again.
    void stop() noexcept;

    /// The bound port (useful with port 0); 0 before start().
    [[nodiscard]] std::uint16_t port() const;

    /// Replaces the bearer token POST requests need ("" disables authentication): a SIGHUP
    /// reload of control.token_file. Safe from any thread; requests already authorized are not
    /// affected, the next one is checked against the new token.
    void set_token(std::string token);

    /// Connections currently open (for tests and diagnostics); safe from any thread.
    [[nodiscard]] std::size_t connections() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pgshift::control
