// Lsn text conversions, matching pg_lsn's input and output functions.
#include "pgshift/common/lsn.hpp"

#include <charconv>
#include <cstdio>

namespace pgshift {

std::string Lsn::str() const
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(value_ >> 32),
                  static_cast<unsigned>(value_ & 0xffffffffu));
    return buf;
}

std::optional<Lsn> Lsn::parse(std::string_view text)
{
    auto slash = text.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash > 8 || text.size() - slash - 1 == 0 ||
        text.size() - slash - 1 > 8)
        return std::nullopt;
    std::uint32_t hi = 0, lo = 0;
    auto parse_half = [](std::string_view s, std::uint32_t& out) {
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, 16);
        return ec == std::errc{} && p == s.data() + s.size();
    };
    if (!parse_half(text.substr(0, slash), hi) || !parse_half(text.substr(slash + 1), lo))
        return std::nullopt;
    return Lsn((static_cast<std::uint64_t>(hi) << 32) | lo);
}

} // namespace pgshift
