// PostgreSQL timestamps (microseconds since 2000-01-01 UTC) and conversions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace pgshift {

/// Seconds between the Unix epoch and the PostgreSQL epoch (2000-01-01 UTC).
inline constexpr std::int64_t k_pg_epoch_offset_seconds = 946684800;

/// A PostgreSQL TimestampTz: microseconds since 2000-01-01 00:00:00 UTC.
struct PgTimestamp {
    std::int64_t micros = 0;
    constexpr auto operator<=>(const PgTimestamp&) const = default;
};

[[nodiscard]] PgTimestamp pg_now();
[[nodiscard]] PgTimestamp to_pg_timestamp(std::chrono::system_clock::time_point tp);
[[nodiscard]] std::chrono::system_clock::time_point to_system(PgTimestamp ts);

/// ISO 8601 with microseconds and an explicit UTC offset, e.g. "2026-11-21 20:15:54.123456+00",
/// which the timestamptz input function accepts under any DateStyle.
[[nodiscard]] std::string format_timestamptz(PgTimestamp ts);

/// The current time as RFC 3339 in UTC, to the second, e.g. "2026-11-30T23:40:15Z" (reports).
[[nodiscard]] std::string now_rfc3339();

} // namespace pgshift
