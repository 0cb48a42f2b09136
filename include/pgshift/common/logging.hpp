// Logging setup: spdlog with a text or JSON line format.
#pragma once

#include <string>

namespace pgshift {

enum class LogFormatKind { text, json };

/// Configures the default spdlog logger (stderr). `level` is trace|debug|info|warn|error.
/// JSON lines carry ts, level, thread, logger and msg, with msg escaped per RFC 8259.
void setup_logging(const std::string& level, LogFormatKind format);

/// Escapes a string for inclusion inside a JSON string literal.
[[nodiscard]] std::string json_escape(std::string_view s);

} // namespace pgshift
