// Logging setup: spdlog with a text or JSON line format.
#pragma once

#include <string>

namespace pgshift {

enum class LogFormatKind { text, json };

/// Configures the default spdlog logger (stderr). `level` is trace|debug|info|warn|error.
/// JSON lines carry ts, level, thread, logger and msg, with msg escaped per RFC 8259.
void setup_logging(const std::string& level, LogFormatKind format);

/// Changes the default logger's level at runtime (a SIGHUP reload). Safe while other threads
/// log: spdlog keeps the level in an atomic.
void set_log_level(const std::string& level);

/// Changes the default logger's line format at runtime (a SIGHUP reload). Safe while other
/// threads log: each sink swaps its formatter under the mutex it writes under, so a line is
/// written whole in either the old or the new format.
void set_log_format(LogFormatKind format);

/// Escapes a string for inclusion inside a JSON string literal.
[[nodiscard]] std::string json_escape(std::string_view s);

} // namespace pgshift
