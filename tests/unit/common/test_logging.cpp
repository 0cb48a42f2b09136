// Unit tests of the logging setup: JSON lines are valid JSON whatever the message holds.
#include "pgshift/common/logging.hpp"

#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace pgshift;

namespace {

/// Runs `fn` with stderr redirected to a temporary file; returns what was written.
template <typename F> std::string capture_stderr(F fn)
{
    char path[] = "/tmp/pgshift-log-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    std::fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    spdlog::default_logger()->flush();
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    unlink(path);
    return ss.str();
}

} // namespace

TEST_CASE("json_escape escapes quotes, backslashes and control characters", "[logging]")
{
    CHECK(json_escape("plain") == "plain");
    CHECK(json_escape("a \"b\" \\ c") == "a \\\"b\\\" \\\\ c");
    CHECK(json_escape("l1\nl2\tx\r") == "l1\\nl2\\tx\\r");
    CHECK(json_escape(std::string("\x01\x1f", 2)) == "\\u0001\\u001f");
    CHECK(json_escape("ünï 😀") == "ünï 😀"); // UTF-8 passes through
    // Regression (issue 7): bytes that are not UTF-8 (a LATIN1 server message) made a log line
    // that is not JSON; each becomes U+FFFD.
    CHECK(json_escape("caf\xe9 \xff") == "caf\xEF\xBF\xBD \xEF\xBF\xBD");
}

TEST_CASE("the json format writes one JSON object per line with an escaped message", "[logging]")
{
    auto out = capture_stderr([] {
        setup_logging("info", LogFormatKind::json);
        spdlog::info("table \"My Schema\".\"select\"\nsecond line \\ {}", 42);
        spdlog::debug("not at info level");
    });
    INFO(out);
    REQUIRE(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.rfind("{\"ts\":\"", 0) == 0);
    CHECK(out.find(R"("level":"info")") != std::string::npos);
    CHECK(out.find(R"("msg":"table \"My Schema\".\"select\"\nsecond line \\ 42"})") != std::string::npos);
}

TEST_CASE("the text format is one readable line per message", "[logging]")
{
    auto out = capture_stderr([] {
        setup_logging("warn", LogFormatKind::text);
        spdlog::warn("careful");
        spdlog::info("hidden");
    });
    CHECK(out.find("careful") != std::string::npos);
    CHECK(out.find("warn") != std::string::npos);
    CHECK(out.find("hidden") == std::string::npos);
}
