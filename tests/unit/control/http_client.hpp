// A deliberately dumb blocking HTTP/1.1 client over POSIX sockets, for driving ControlServer.
//
// It does byte-level things a real client library hides (partial requests, one byte at a
// time, bodies past the limit), which is what the server's failure paths need.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace pgshift::control::test {

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers; ///< names lower-cased
    std::string body;

    [[nodiscard]] std::string header(const std::string& lower_name) const
    {
        auto it = headers.find(lower_name);
        return it == headers.end() ? std::string() : it->second;
    }
};

/// One TCP connection to 127.0.0.1:port. Reads time out after 5 s so a broken server fails
/// the test instead of hanging it.
class Connection {
public:
    explicit Connection(std::uint16_t port);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    /// Sends everything; false if the peer closed or reset the connection.
    bool send(std::string_view data);

    /// Reads one response. With `head`, no body is expected whatever Content-Length says.
    /// nullopt when the connection ends (or times out) before a complete response.
    std::optional<HttpResponse> read_response(bool head = false);

    /// Waits up to `timeout` for the server to close; true on EOF or reset. Bytes that arrive
    /// meanwhile are appended to `received` (if given).
    bool wait_closed(std::chrono::milliseconds timeout, std::string* received = nullptr);

    /// True if data (or EOF) is readable within `timeout`.
    bool readable(std::chrono::milliseconds timeout);

    [[nodiscard]] int fd() const { return fd_; }

private:
    int fd_ = -1;
    std::string buffer_; ///< bytes read past the last response
};

/// Builds a request with Host and, when `body` is non-empty or the method is POST, Content-Length.
std::string make_request(std::string_view method, std::string_view target, std::string_view extra_headers = {},
                         std::string_view body = {});

/// Opens a connection, sends one request, reads one response.
std::optional<HttpResponse> round_trip(std::uint16_t port, std::string_view method, std::string_view target,
                                       std::string_view extra_headers = {}, std::string_view body = {});

} // namespace pgshift::control::test
