// host:port parsing and conninfo quoting (see address.hpp).
#include "pgshift/common/address.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace pgshift {

std::optional<HostPort> parse_host_port(std::string_view text, std::string& why)
{
    HostPort out;
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos) {
            why = "missing ']' after the IPv6 address";
            return std::nullopt;
        }
        if (close + 1 >= text.size() || text[close + 1] != ':') {
            why = "expected ':' and a port after ']'";
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        out.bracketed = true;
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            why = "expected host:port";
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            why = "an IPv6 address must be written in brackets, e.g. [::1]:8187";
            return std::nullopt;
        }
    }
    if (host.empty()) {
        why = "missing host before ':' (use 0.0.0.0 to listen on every IPv4 address)";
        return std::nullopt;
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    const bool digits_only =
        std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
    if (port.empty() || !digits_only || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
        why = "the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    out.host = std::string(host);
    out.port = static_cast<std::uint16_t>(value);
    return out;
}

std::string conninfo_quote(std::string_view value)
{
    if (!value.empty() && value.find_first_of(" \t\n\r\f\v'\\") == std::string_view::npos)
        return std::string(value);
    std::string out = "'";
    for (const char c : value) {
        if (c == '\'' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + "'";
}

} // namespace pgshift
