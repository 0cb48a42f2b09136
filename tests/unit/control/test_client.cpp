// The CLI client (src/daemon/client.cpp) against a real ControlServer, a closed port and a silent peer.
#include "pgshift/control/server.hpp"
#include "pgshift/daemon/client.hpp"
#include "pgshift/daemon/run.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

using pgshift::daemon::ClientOptions;
using pgshift::daemon::run_client;

namespace {

/// Redirects std::cout and std::cerr for one scope; the client prints there.
class CaptureOutput {
public:
    CaptureOutput() : old_out_(std::cout.rdbuf(out_.rdbuf())), old_err_(std::cerr.rdbuf(err_.rdbuf())) {}
    ~CaptureOutput()
    {
        std::cout.rdbuf(old_out_);
        std::cerr.rdbuf(old_err_);
    }
    CaptureOutput(const CaptureOutput&) = delete;
    CaptureOutput& operator=(const CaptureOutput&) = delete;

    [[nodiscard]] std::string out() const { return out_.str(); }
    [[nodiscard]] std::string err() const { return err_.str(); }

private:
    std::ostringstream out_, err_;
    std::streambuf* old_out_;
    std::streambuf* old_err_;
};

/// A loopback TCP socket bound to an ephemeral port; listening only if asked.
class LoopbackSocket {
public:
    explicit LoopbackSocket(bool listen)
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 || (listen && ::listen(fd_, 4) != 0))
            throw std::runtime_error("cannot set up a loopback socket");
        port_ = ntohs(addr.sin_port);
    }
    ~LoopbackSocket() { ::close(fd_); }
    LoopbackSocket(const LoopbackSocket&) = delete;
    LoopbackSocket& operator=(const LoopbackSocket&) = delete;

    [[nodiscard]] int fd() const { return fd_; }
    [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

private:
    int fd_ = -1;
    unsigned port_ = 0;
};

struct FixedProvider : pgshift::control::StatusProvider {
    pgshift::control::StatusSnapshot snapshot() const override
    {
        pgshift::control::StatusSnapshot s;
        s.lag_bytes = 72;
        s.lag_seconds = 1.5;
        s.source_lsn = 0x16B3748;
        s.applied_lsn = 0x16B3700;
        return s;
    }
    bool alive() const override { return true; }
    void pause() override {}
    void resume() override {}
    // The client's cutover and finish paths are not what these cases test: an operation runs.
    pgshift::control::OperationStart start_switch(const std::string&) override
    {
        return {409, "another operation is running", {}, {}};
    }
    pgshift::control::SwitchReport switch_report() const override { return {}; }
    pgshift::control::OperationStart start_finish() override { return {409, "another operation is running", {}, {}}; }
};

} // namespace

TEST_CASE("issue 7: the client reports an unreachable daemon by URL and step, without Boost's source location",
          "[control][client]")
{
    // Bound but not listening: nothing else can take the port while the test runs, and a
    // connect is refused.
    LoopbackSocket closed(false);
    ClientOptions options;
    options.url = closed.url();
    CaptureOutput output;
    const int code = run_client("status", options);
    const std::string err = output.err();
    INFO(err);
    CHECK(code == pgshift::daemon::k_exit_failure);
    CHECK(err == "pgshift: cannot reach the daemon at " + options.url + ": connect: Connection refused\n");
    CHECK(err.find(".hpp") == std::string::npos);
    CHECK(err.find("in function") == std::string::npos);
    CHECK(output.out().empty());
}

TEST_CASE("the client names the read step when the daemon closes without answering", "[control][client]")
{
    LoopbackSocket listener(true);
    std::thread peer([&] {
        int fd = ::accept(listener.fd(), nullptr, nullptr);
        if (fd >= 0)
            ::close(fd);
    });
    ClientOptions options;
    options.url = listener.url();
    CaptureOutput output;
    const int code = run_client("lag", options);
    peer.join();
    const std::string err = output.err();
    INFO(err);
    CHECK(code == pgshift::daemon::k_exit_failure);
    CHECK(err.rfind("pgshift: cannot reach the daemon at " + options.url + ": ", 0) == 0);
    // The write may or may not see the close first; either way the step is named, not a file.
    CHECK((err.find(": read: ") != std::string::npos || err.find(": write: ") != std::string::npos));
    CHECK(err.find(".hpp") == std::string::npos);
}

TEST_CASE("the client prints the lag from a running server", "[control][client]")
{
    FixedProvider provider;
    pgshift::control::ControlServer server("127.0.0.1:0", "", provider, "v");
    server.start();
    ClientOptions options;
    options.url = "http://127.0.0.1:" + std::to_string(server.port());
    CaptureOutput output;
    CHECK(run_client("lag", options) == pgshift::daemon::k_exit_ok);
    CHECK(output.out() == "72 bytes, 1.500 s (source 0/16B3748, applied 0/16B3700)\n");
    CHECK(output.err().empty());
}
