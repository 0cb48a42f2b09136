// spdlog setup with text and JSON formats.
#include "pgshift/common/logging.hpp"

#include "pgshift/common/utf8.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <ctime>

namespace pgshift {

std::string json_escape(std::string_view raw)
{
    // Any bytes may reach a log line (a server message in another encoding, a file name).
    const std::string s = valid_utf8(raw);
    std::string out;
    out.reserve(s.size() + 8);
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out.push_back(static_cast<char>(c));
            }
        }
    }
    return out;
}

namespace {

/// `%*` in a pattern: the message payload, JSON-escaped.
class JsonMessageFlag : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override
    {
        auto esc = json_escape(std::string_view(msg.payload.data(), msg.payload.size()));
        dest.append(esc.data(), esc.data() + esc.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessageFlag>(); }
};

} // namespace

void set_log_level(const std::string& level)
{
    spdlog::default_logger()->set_level(spdlog::level::from_str(level));
}

void set_log_format(LogFormatKind format)
{
    auto logger = spdlog::default_logger();
    if (format == LogFormatKind::json) {
        auto f = std::make_unique<spdlog::pattern_formatter>();
        f->add_flag<JsonMessageFlag>('*').set_pattern(
            R"({"ts":"%Y-%m-%dT%H:%M:%S.%f%z","level":"%l","thread":%t,"msg":"%*"})");
        logger->set_formatter(std::move(f));
    } else {
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%t] %v");
    }
}

void setup_logging(const std::string& level, LogFormatKind format)
{
    spdlog::drop("pgshift");
    auto logger = spdlog::stderr_logger_mt("pgshift");
    spdlog::set_default_logger(logger);
    set_log_format(format);
    set_log_level(level);
    logger->flush_on(spdlog::level::trace);
}

} // namespace pgshift
