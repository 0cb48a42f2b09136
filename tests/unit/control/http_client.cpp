// The blocking test client of http_client.hpp: plain sockets, explicit timeouts.
#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace pgshift::control::test {

Connection::Connection(std::uint16_t port)
{
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0)
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        int err = errno;
        ::close(fd_);
        throw std::runtime_error(std::string("connect: ") + std::strerror(err));
    }
}

Connection::~Connection()
{
    if (fd_ >= 0)
        ::close(fd_);
}

bool Connection::send(std::string_view data)
{
    while (!data.empty()) {
        auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

bool Connection::readable(std::chrono::milliseconds timeout)
{
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

namespace {

std::string lower(std::string s)
{
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return std::string(s);
}

} // namespace

std::optional<HttpResponse> Connection::read_response(bool head)
{
    auto fill = [&]() {
        char chunk[4096];
        auto n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n <= 0)
            return false;
        buffer_.append(chunk, static_cast<std::size_t>(n));
        return true;
    };
    std::size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos)
        if (!fill())
            return std::nullopt;

    HttpResponse res;
    std::string_view head_text(buffer_.data(), header_end);
    auto line_end = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, line_end);
    // "HTTP/1.1 200 OK"
    if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/")
        return std::nullopt;
    res.status = std::stoi(std::string(status_line.substr(9, 3)));
    std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head_text.substr(line_end + 2);
    while (!rest.empty()) {
        auto end = rest.find("\r\n");
        auto line = rest.substr(0, end);
        auto colon = line.find(':');
        if (colon != std::string_view::npos)
            res.headers[lower(std::string(line.substr(0, colon)))] = trim(line.substr(colon + 1));
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
    }
    buffer_.erase(0, header_end + 4);

    // 1xx and HEAD responses have no body.
    std::size_t length = 0;
    if (!head && res.status >= 200 && res.headers.count("content-length"))
        length = std::stoul(res.headers["content-length"]);
    while (buffer_.size() < length)
        if (!fill())
            return std::nullopt;
    res.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return res;
}

bool Connection::wait_closed(std::chrono::milliseconds timeout, std::string* received)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    if (received)
        received->append(buffer_);
    buffer_.clear();
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !readable(left))
            return false;
        char chunk[4096];
        auto n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
        if (received)
            received->append(chunk, static_cast<std::size_t>(n));
    }
}

std::string make_request(std::string_view method, std::string_view target, std::string_view extra_headers,
                         std::string_view body)
{
    std::string r;
    r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    r.append(extra_headers);
    if (!body.empty() || method == "POST")
        r.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
    r.append("\r\n").append(body);
    return r;
}

std::optional<HttpResponse> round_trip(std::uint16_t port, std::string_view method, std::string_view target,
                                       std::string_view extra_headers, std::string_view body)
{
    Connection c(port);
    if (!c.send(make_request(method, target, extra_headers, body)))
        return std::nullopt;
    return c.read_response(method == "HEAD");
}

} // namespace pgshift::control::test
