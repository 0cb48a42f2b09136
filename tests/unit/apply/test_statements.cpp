// Unit tests of relation mapping and apply statement shapes (rules 6, 7 and FULL lookups).
#include "pgshift/apply/statements.hpp"
#include "pgshift/common/errors.hpp"

#include <catch2/catch.hpp>

using namespace pgshift;
using namespace pgshift::apply;
using protocol::ColumnKind;

namespace {

protocol::Relation relation(protocol::ReplicaIdentity ri, std::vector<protocol::RelationColumn> cols)
{
    protocol::Relation r;
    r.relid = RelId{16384};
    r.nspname = "My Schema";
    r.relname = "select";
    r.replident = ri;
    r.columns = std::move(cols);
    return r;
}

protocol::TupleData tuple(std::vector<protocol::ColumnValue> cols) { return protocol::TupleData{std::move(cols)}; }

const protocol::ColumnValue v(std::string_view s) { return {ColumnKind::text, s}; }
const protocol::ColumnValue null_{ColumnKind::null, {}};
const protocol::ColumnValue unchanged{ColumnKind::unchanged_toast, {}};

} // namespace

TEST_CASE("columns are mapped by name and quoted", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_, {{1, "Order Id", 23, -1}, {0, "body", 25, -1}});
    // Target has the columns in another order plus an extra one.
    auto m = map_relation(rel, {{"extra", true, false, "text", true}, {"body", true, false, "text", true}, {"Order Id", true, false, "text", true}}, false, 1);
    REQUIRE(m.qualified == "\"My Schema\".\"select\"");
    REQUIRE(m.columns.size() == 2);
    REQUIRE(m.columns[0].quoted == "\"Order Id\"");
    auto st = build_insert(m, tuple({v("1"), v("x")}));
    REQUIRE(st.sql == "INSERT INTO \"My Schema\".\"select\" (\"Order Id\", \"body\") VALUES ($1, $2)");
}

TEST_CASE("a source column missing on the target is an error naming table and column", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_, {{1, "id", 23, -1}, {0, "added", 25, -1}});
    try {
        (void)map_relation(rel, {{"id", true, false, "text", true}}, false, 1);
        FAIL("expected an error");
    } catch (const TargetError& e) {
        REQUIRE_THAT(e.what(), Catch::Contains("\"added\"") && Catch::Contains("My Schema.select"));
        REQUIRE_FALSE(e.retryable());
    }
}

TEST_CASE("UPDATE leaves unchanged TOAST columns out of SET", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_,
                        {{1, "id", 23, -1}, {0, "big", 25, -1}, {0, "n", 23, -1}});
    auto m = map_relation(rel, {{"id", true, false, "text", true}, {"big", true, false, "text", true}, {"n", true, false, "text", true}}, false, 7);
    auto row = tuple({v("5"), unchanged, v("42")});
    auto st = build_update(m, row, row, false, false);
    REQUIRE(st.sql == "UPDATE ONLY \"My Schema\".\"select\" SET \"id\" = $1, \"n\" = $2 WHERE \"id\" = $3");
    REQUIRE(st.params.size() == 3);
    REQUIRE(st.params[1].column == 2);

    // Another 'u' set gives another cached shape.
    auto all = build_update(m, tuple({v("5"), v("b"), v("42")}), row, false, false);
    REQUIRE(all.key != st.key);
    REQUIRE(all.sql.find("\"big\" = $2") != std::string::npos);
}

TEST_CASE("a primary key update locates the row by the old key", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_, {{1, "a", 23, -1}, {1, "b", 23, -1}, {0, "c", 25, -1}});
    auto m = map_relation(rel, {{"a", true, false, "text", true}, {"b", true, false, "text", true}, {"c", true, false, "text", true}}, false, 1);
    auto old_key = tuple({v("1"), v("2"), null_});
    auto st = build_update(m, tuple({v("1"), v("3"), v("x")}), old_key, true, false);
    REQUIRE(st.sql.find("WHERE \"a\" = $4 AND \"b\" = $5") != std::string::npos);
    REQUIRE(st.params[3].tuple == 1);
}

TEST_CASE("REPLICA IDENTITY FULL compares types without equality as text and NULLs with IS NULL", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::full, {{1, "doc", 114, -1}, {1, "p", 600, -1}, {1, "n", 23, -1}});
    auto m = map_relation(rel, {{"doc", false, false, "text", true}, {"p", false, false, "text", true}, {"n", true, false, "text", true}}, false, 1);
    auto old_row = tuple({v("{\"a\": 1}"), v("(1,2)"), null_});
    auto st = build_delete(m, old_row, true);
    REQUIRE(st.sql == "DELETE FROM ONLY \"My Schema\".\"select\" WHERE ctid = (SELECT ctid FROM ONLY "
                      "\"My Schema\".\"select\" WHERE \"doc\"::text = $1 AND \"p\"::text = $2 AND \"n\" IS NULL "
                      "LIMIT 1)");
    auto st2 = build_delete(m, tuple({v("{}"), v("(1,2)"), v("3")}), true);
    REQUIRE(st2.key != st.key);
    REQUIRE(st2.sql.find("\"n\" = $3") != std::string::npos);
}

TEST_CASE("partitioned targets are addressed without ONLY and by (tableoid, ctid)", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::full, {{1, "k", 23, -1}});
    auto m = map_relation(rel, {{"k", true, false, "text", true}}, true, 1);
    auto st = build_delete(m, tuple({v("1")}), true);
    REQUIRE(st.sql.rfind("DELETE FROM \"My Schema\".\"select\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid", 0) ==
            0);
}

TEST_CASE("malformed tuples are protocol errors, never guessed around", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_, {{1, "id", 23, -1}, {0, "x", 25, -1}});
    auto m = map_relation(rel, {{"id", true, false, "text", true}, {"x", true, false, "text", true}}, false, 1);
    REQUIRE_THROWS_AS(build_insert(m, tuple({v("1")})), ProtocolError);
    REQUIRE_THROWS_AS(build_insert(m, tuple({v("1"), unchanged})), ProtocolError);
    auto no_key = tuple({null_, v("x")});
    REQUIRE_THROWS_AS(build_delete(m, no_key, false), ProtocolError);
}

TEST_CASE("multi-row statements: INSERT VALUES, UPDATE and DELETE joined on the key with typed VALUES", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_,
                        {{1, "id", 23, -1}, {0, "big", 25, -1}, {0, "n", 23, -1}});
    auto m = map_relation(rel,
                          {{"id", true, false, "integer", true},
                           {"big", true, false, "text", true},
                           {"n", true, false, "integer", true}},
                          false, 3);

    auto ins = build_insert_rows(m, 2);
    REQUIRE(ins.sql == "INSERT INTO \"My Schema\".\"select\" (\"id\", \"big\", \"n\") VALUES ($1, $2, $3), ($4, $5, $6)");
    REQUIRE(ins.params.size() == 3); // one row's template
    REQUIRE(ins.rows == 2);

    // Unchanged TOAST and key columns stay out of SET; the key comes from the old-key tuple.
    auto up = build_update_rows(m, tuple({v("1"), unchanged, v("5")}), 2);
    REQUIRE(up.sql == "UPDATE ONLY \"My Schema\".\"select\" AS pgshift_t SET \"n\" = pgshift_v.p2 FROM (VALUES "
                      "($1::integer, $2::integer), ($3::integer, $4::integer)) AS pgshift_v(p1, p2) "
                      "WHERE pgshift_t.\"id\" = pgshift_v.p1");
    REQUIRE(up.params.size() == 2);
    REQUIRE(up.params[0].tuple == 1);
    REQUIRE(up.params[1].tuple == 0);
    REQUIRE(up.params[1].column == 2);
    REQUIRE(up.key != build_update_rows(m, tuple({v("1"), v("x"), v("5")}), 2).key);

    auto del = build_delete_rows(m, 3);
    REQUIRE(del.sql == "DELETE FROM ONLY \"My Schema\".\"select\" AS pgshift_t USING (VALUES ($1::integer), "
                       "($2::integer), ($3::integer)) AS pgshift_v(p1) WHERE pgshift_t.\"id\" = pgshift_v.p1");
}

TEST_CASE("COPY rows escape backslash, tab, newline and carriage return, and NULL is backslash-N", "[apply]")
{
    auto rel = relation(protocol::ReplicaIdentity::default_, {{1, "id", 23, -1}, {0, "t", 25, -1}});
    auto m = map_relation(rel, {{"id", true, false, "integer", true}, {"t", true, false, "text", true}}, false, 1);
    REQUIRE(build_copy(m) == "COPY \"My Schema\".\"select\" (\"id\", \"t\") FROM STDIN");
    std::string out;
    append_copy_row(out, tuple({v("1"), v("a\\b\tc\nd\re\\.")}));
    append_copy_row(out, tuple({v("2"), null_}));
    REQUIRE(out == "1\ta\\\\b\\tc\\nd\\re\\\\.\n2\t\\N\n");
}

#include "pgshift/apply/writer.hpp"

TEST_CASE("writer: inserts go as COPY from 48 rows nearby, only from thousands across a slow network", "[apply]")
{
    using std::chrono::microseconds;
    Writer w;
    CHECK(w.copy_min_rows() == 48); // before any measurement: the nearby rule
    w.set_round_trip(microseconds(40)); // loopback
    CHECK(w.copy_min_rows() == 48);
    w.set_round_trip(microseconds(5000)); // 5 ms: two round trips cost 10 ms, 2 µs saved per row
    CHECK(w.copy_min_rows() == 5000);
    w.set_round_trip(microseconds(300));
    CHECK(w.copy_min_rows() == 300);
}
