// PostgreSQL timestamp conversions.
#include "pgshift/common/clock.hpp"

#include <cstdio>
#include <ctime>

namespace pgshift {

PgTimestamp to_pg_timestamp(std::chrono::system_clock::time_point tp)
{
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
    return PgTimestamp{us - k_pg_epoch_offset_seconds * 1'000'000};
}

PgTimestamp pg_now() { return to_pg_timestamp(std::chrono::system_clock::now()); }

std::chrono::system_clock::time_point to_system(PgTimestamp ts)
{
    return std::chrono::system_clock::time_point(
        std::chrono::microseconds(ts.micros + k_pg_epoch_offset_seconds * 1'000'000));
}

std::string format_timestamptz(PgTimestamp ts)
{
    std::int64_t unix_us = ts.micros + k_pg_epoch_offset_seconds * 1'000'000;
    std::int64_t secs = unix_us / 1'000'000;
    std::int64_t frac = unix_us % 1'000'000;
    if (frac < 0) {
        frac += 1'000'000;
        secs -= 1;
    }
    std::time_t t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
    return buf;
}

std::string now_rfc3339()
{
    auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

} // namespace pgshift
