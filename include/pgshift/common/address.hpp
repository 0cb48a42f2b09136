// The project's one host:port parser and one conninfo value quoter (every caller uses these).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgshift {

struct HostPort {
    std::string host;       ///< without brackets
    std::uint16_t port = 0; ///< 0..65535 (0: any free port, where a listener accepts that)
    bool bracketed = false; ///< written as [host]:port (an IPv6 address)
};

/// Splits "host:port" or "[ipv6]:port" and checks the port (a number up to 65535). The host is not checked
/// beyond being present (and unbracketed hosts holding no ':'). On failure returns nothing and
/// sets `why` (e.g. "expected host:port", "the port must be a number from 1 to 65535").
[[nodiscard]] std::optional<HostPort> parse_host_port(std::string_view text, std::string& why);

/// A value for a libpq key=value conninfo: as is when it is plain, else in single quotes with
/// ' and \ escaped by a backslash (libpq's rules).
[[nodiscard]] std::string conninfo_quote(std::string_view value);

} // namespace pgshift
