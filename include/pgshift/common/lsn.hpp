// Strong types for WAL positions, transaction ids and relation ids.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgshift {

/// A WAL position (XLogRecPtr). Printed and parsed as PostgreSQL does: "X/Y", hex halves.
class Lsn {
public:
    constexpr Lsn() = default;
    constexpr explicit Lsn(std::uint64_t v) : value_(v) {}

    [[nodiscard]] constexpr std::uint64_t value() const { return value_; }
    [[nodiscard]] constexpr bool is_zero() const { return value_ == 0; }
    [[nodiscard]] std::string str() const;

    /// Parses "X/Y" (hex, 1-8 digits each). Returns nullopt on anything else.
    [[nodiscard]] static std::optional<Lsn> parse(std::string_view text);

    constexpr auto operator<=>(const Lsn&) const = default;

private:
    std::uint64_t value_ = 0;
};

/// A source transaction id (32 bits on the wire).
struct Xid {
    std::uint32_t value = 0;
    constexpr auto operator<=>(const Xid&) const = default;
};

/// A source relation OID. Meaningless on the target: map by name.
struct RelId {
    std::uint32_t value = 0;
    constexpr auto operator<=>(const RelId&) const = default;
};

} // namespace pgshift

template <>
struct std::hash<pgshift::RelId> {
    std::size_t operator()(pgshift::RelId r) const noexcept { return std::hash<std::uint32_t>{}(r.value); }
};
