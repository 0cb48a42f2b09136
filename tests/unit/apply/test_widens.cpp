// Which source type changes apply follows on the target (columns.hpp): every value kept exactly.
#include "pgshift/apply/columns.hpp"

#include <catch2/catch.hpp>

using pgshift::apply::widens;

namespace {

constexpr std::uint32_t int2 = 21, int4 = 23, int8 = 20, float4 = 700, float8 = 701, numeric = 1700, text = 25,
                        varchar = 1043, bpchar = 1042, timestamp = 1114, timestamptz = 1184, json = 114,
                        jsonb = 3802;

/// atttypmod of numeric(p,s), varchar(n), char(n).
constexpr std::int32_t num(int p, int s) { return ((p << 16) | s) + 4; }
constexpr std::int32_t len(int n) { return n + 4; }

} // namespace

TEST_CASE("widens: integers to wider integers and to numerics that hold every value", "[unit][apply]")
{
    CHECK(widens(int4, -1, int8, -1));
    CHECK(widens(int2, -1, int4, -1));
    CHECK(widens(int2, -1, int8, -1));
    CHECK(widens(int8, -1, numeric, -1));
    CHECK(widens(int4, -1, numeric, num(12, 2)));
    CHECK(widens(int4, -1, numeric, num(10, 0)));
    CHECK_FALSE(widens(int4, -1, numeric, num(10, 2))); // 2147483647 needs 10 digits before the point
    CHECK_FALSE(widens(int8, -1, int4, -1));
    CHECK_FALSE(widens(int4, -1, int2, -1));
    CHECK_FALSE(widens(int4, -1, int4, -1));
    CHECK_FALSE(widens(int4, -1, float8, -1)); // not every bigint is a double, and text output differs
    CHECK_FALSE(widens(int4, -1, text, -1));
}

TEST_CASE("widens: longer or unbounded strings and numerics of the same scale", "[unit][apply]")
{
    CHECK(widens(varchar, len(10), varchar, len(20)));
    CHECK(widens(varchar, len(10), varchar, -1));
    CHECK(widens(varchar, len(10), text, -1));
    CHECK(widens(varchar, -1, text, -1));
    CHECK(widens(text, -1, varchar, -1));
    CHECK(widens(bpchar, len(3), bpchar, len(5)));
    CHECK(widens(numeric, num(10, 2), numeric, num(12, 2)));
    CHECK(widens(numeric, num(10, 2), numeric, -1));
    CHECK(widens(float4, -1, float8, -1));
    CHECK_FALSE(widens(varchar, len(20), varchar, len(10)));
    CHECK_FALSE(widens(varchar, -1, varchar, len(10)));
    CHECK_FALSE(widens(text, -1, varchar, len(10)));
    CHECK_FALSE(widens(bpchar, len(3), text, -1)); // the cast strips trailing blanks
    CHECK_FALSE(widens(bpchar, len(3), varchar, len(5)));
    CHECK_FALSE(widens(numeric, num(10, 2), numeric, num(12, 3))); // another scale rounds differently
    CHECK_FALSE(widens(numeric, -1, numeric, num(20, 2)));
    CHECK_FALSE(widens(float8, -1, float4, -1));
}

TEST_CASE("widens: conversions that depend on the session or change values are not made", "[unit][apply]")
{
    CHECK_FALSE(widens(timestamp, -1, timestamptz, -1)); // depends on TimeZone
    CHECK_FALSE(widens(json, -1, jsonb, -1));
    CHECK_FALSE(widens(text, -1, int4, -1));
}
