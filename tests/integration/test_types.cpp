// Integration: every column type and row-change shape survives source → pgshift → target unchanged.
//
// Each SECTION runs on fresh clusters: the schema is created identically on both
// before the daemon starts (no initial copy here), the daemon streams, the section
// writes on the source, then every table's digest must match within 60 s. A section
// that breaks the daemon therefore cannot hide the result of another one.
#include "harness/replication_fixture.hpp"
#include "harness/type_schema.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

FixtureOptions fixture_options(int workers = 1)
{
    FixtureOptions o;
    o.schema_sql = k_type_schema;
    o.daemon.name = "types";
    o.daemon.workers = workers;
    return o;
}

/// Waits for every table to match, then compares each digest once more, table by table.
void require_converged(ReplicationFixture& fx, std::chrono::milliseconds timeout = 60s)
{
    const bool converged = fx.converged(k_type_tables, timeout);
    REQUIRE(converged);
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    for (const auto& table : k_type_tables) {
        INFO("table " << table);
        CHECK(table_digest(s, table) == table_digest(t, table));
    }
    CHECK(fx.daemon().running());
}

/// The same single value on both clusters (and not NULL on the source).
void check_same_value(ReplicationFixture& fx, const std::string& sql)
{
    INFO(sql);
    auto on_source = fx.source().scalar(sql);
    auto on_target = fx.target().scalar(sql);
    CHECK(on_source == on_target);
}

} // namespace

TEST_CASE("types: every column type and change shape replicates exactly", "[integration][types]")
{
    ReplicationFixture fx(fixture_options());
    REQUIRE(fx.start_and_wait_streaming(30s));
    auto& src = fx.source();
    auto& dst = fx.target();

    SECTION("integers, numeric (NaN, ±Infinity, huge), float8/real (±Infinity, NaN, -0, extremes)")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_numbers VALUES
              (1, 2147483647, 9223372036854775807, 32767, 'NaN', 12345678901234.123456, 'Infinity', 'NaN'),
              (2, -2147483648, -9223372036854775808, -32768,
                 '-123456789012345678901234567890.123456789012345678901234567890', -0.000001, '-Infinity', '-Infinity'),
              (3, 0, 0, 0, 'Infinity', 0, 0.1, 0.1),
              (4, NULL, NULL, NULL, '-Infinity', NULL, '-0', 3.4e38),
              (5, 1, 1, 1, 0.000000000000000000001, 1, 2.2250738585072014e-308, 1.17549435e-38),
              (6, 7, 7, 7, 1e100, 7, 4.9e-324, 'Infinity'),
              (7, 8, 8, 8, 2.50, 8, 1.7976931348623157e308, 3.14159274);
            UPDATE t_numbers SET f8 = 'NaN', n = n * 3 WHERE id = 3;
            UPDATE t_numbers SET n = 'NaN', f4 = '-Infinity' WHERE id = 5;
            DELETE FROM t_numbers WHERE id = 6;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT n::text FROM t_numbers WHERE id = 1") == "NaN");
        CHECK(dst.value("SELECT f8::text FROM t_numbers WHERE id = 2") == "-Infinity");
        CHECK(dst.value("SELECT f8::text FROM t_numbers WHERE id = 4") == "-0");
        check_same_value(fx, "SELECT string_agg(f8::text || '/' || f4::text, ',' ORDER BY id) FROM t_numbers");
    }

    SECTION("text with quotes, backslashes, tabs, newlines, \\N and non-BMP unicode; bytea")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_text VALUES
              (1, 'it''s "quoted"', 'single '' and double "', 'ab', '\x00ff10'::bytea),
              (2, E'back\\slash \\N tab\there new\nline cr\r end', E'a\tb', 'x', E'\\000\\001\\134'::bytea),
              (3, '😀 grin, 日本語, é, ' || U&'\+01F600', '😀', '😀', convert_to('😀', 'UTF8')),
              (4, '\N', 'NULL', 'NULL', ''::bytea),
              (5, '', '', '', NULL),
              (6, NULL, NULL, NULL, decode(repeat('00ff5c0a', 2000), 'hex')),
              (7, repeat(E'line\n', 500) || '\', '\\', '"', '\x5c'::bytea);
            UPDATE t_text SET t = t || E'\n-- updated \\ ''q''' WHERE id IN (1, 3);
            UPDATE t_text SET b = '\xdeadbeef'::bytea, c = NULL WHERE id = 4;
            DELETE FROM t_text WHERE id = 5;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT t FROM t_text WHERE id = 2") == "back\\slash \\N tab\there new\nline cr\r end");
        CHECK(dst.value("SELECT t FROM t_text WHERE id = 4") == "\\N");
        CHECK(dst.value("SELECT vc FROM t_text WHERE id = 3") == "\xF0\x9F\x98\x80");
        CHECK(dst.value("SELECT count(*) FROM t_text WHERE t IS NULL") == "1");
        check_same_value(fx, "SELECT md5(string_agg(b::text, ',' ORDER BY id)) FROM t_text");
    }

    SECTION("json (whitespace and duplicate keys kept) and jsonb")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_json VALUES
              (1, '{"a": [1, 2.50, "x\"y"],   "b": null, "a": 2}', '{"a": [1, 2.50, "x\"y"], "b": null}'),
              (2, '"\u00e9 \ud83d\ude00 😀"', '"😀 \\ \n"'),
              (3, 'null', 'null'),
              (4, NULL, NULL),
              (5, '[]', '{}'),
              (6, '{"deep": {"x": [true, false, 1e400]}}', '{"num": 1.000, "big": 123456789012345678901234567890}');
            UPDATE t_json SET jb = jb || '{"added": "yes\ttab"}' WHERE id = 1;
            UPDATE t_json SET j = '{ "spaced" :  1 }' WHERE id = 5;
            DELETE FROM t_json WHERE id = 3;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT j::text FROM t_json WHERE id = 1") ==
              R"({"a": [1, 2.50, "x\"y"],   "b": null, "a": 2})");
        CHECK(dst.value("SELECT j::text FROM t_json WHERE id = 5") == R"({ "spaced" :  1 })");
    }

    SECTION("arrays with NULL, quoted, empty, multi-dimensional and non-default-bound elements")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_arrays VALUES
              (1, '{"a b",NULL,"c\"d"}', '{1,NULL,3}', '{{1,2},{3,4}}', '{NaN,1.5,NULL,Infinity}',
                  ARRAY['{"k": "v"}'::jsonb, 'null', NULL], '{2024-01-01,infinity,NULL}'),
              (2, '{}', '{}', '{}', '{}', '{}', '{}'),
              (3, '{"NULL","","x,y","{z}","back\\slash","😀", " lead"}', '[0:2]={7,8,9}', '{{NULL,NULL}}',
                  '{-0.0001}', ARRAY['[1, "two"]'::jsonb], '{-infinity}'),
              (4, NULL, NULL, NULL, NULL, NULL, NULL);
            UPDATE t_arrays SET ta = array_append(ta, E'new\nline') WHERE id = 1;
            UPDATE t_arrays SET ia = NULL, ia2 = '{{5}}' WHERE id = 2;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT ta::text FROM t_arrays WHERE id = 1") == R"({"a b",NULL,"c\"d","new
line"})");
        CHECK(dst.value("SELECT ia::text FROM t_arrays WHERE id = 3") == "[0:2]={7,8,9}");
        CHECK(dst.value("SELECT ta[1] FROM t_arrays WHERE id = 3") == "NULL"); // the string, not NULL
    }

    SECTION("timestamptz, timestamp, date (incl. ±infinity, BC), interval, time, timetz")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_time VALUES
              (1, '2024-02-29 23:59:59.999999+05:30', '2024-02-29 23:59:59.999999', '2024-02-29',
                  '1 year 2 mons 3 days 04:05:06.789', '23:59:59.999999', '12:00:00+14'),
              (2, 'infinity', 'infinity', 'infinity', '-1 days -00:00:01', '00:00', '00:00-12'),
              (3, '-infinity', '-infinity', '-infinity', '0', NULL, NULL),
              (4, '0044-03-15 12:00:00+00 BC', '0044-03-15 12:00 BC', '4713-01-01 BC', '178000000 years',
                  '24:00:00', '23:59:59.5+05:45'),
              (5, '1970-01-01 00:00:00+00', '2000-01-01', '2000-01-01', '-3 mons +40 days -00:00:00.000001',
                  '12:34', NULL);
            UPDATE t_time SET iv = iv * 2, tstz = tstz + interval '1 microsecond' WHERE id = 1;
            UPDATE t_time SET d = 'epoch' WHERE id = 3;
            DELETE FROM t_time WHERE id = 5;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT d::text FROM t_time WHERE id = 2") == "infinity");
        check_same_value(fx, "SELECT string_agg(tstz::text || '|' || ts::text || '|' || iv::text, ',' ORDER BY id) "
                             "FROM t_time");
    }

    SECTION("uuid, inet, cidr, macaddr, boolean, varbit")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_misc VALUES
              (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', true, B'10110'),
              (2, '00000000-0000-0000-0000-000000000000', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', false, B''),
              (3, gen_random_uuid(), '2001:db8::1/64', '192.168.100.128/25', NULL, NULL, NULL);
            UPDATE t_misc SET ip = '127.0.0.1', flag = NOT flag WHERE id = 1;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT ip::text FROM t_misc WHERE id = 3") == "2001:db8::1/64");
    }

    SECTION("enum, domain, composite-type column and arrays of them")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_user_types VALUES
              (1, 'happy', 5, ROW(E'Main "St", \\ 5', 12345, ARRAY['a', 'b c'])::address,
                  ARRAY[ROW('x', 1, NULL)::address, NULL], '{sad,happy}'),
              (2, 'very "happy"', 2147483647, ROW(NULL, NULL, NULL)::address, '{}', '{}'),
              (3, NULL, NULL, NULL, NULL, NULL);
            UPDATE t_user_types SET p = p + 1, m = 'ok', addr.zip = 54321 WHERE id = 1;
            DELETE FROM t_user_types WHERE id = 3;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT (addr).street FROM t_user_types WHERE id = 1") == "Main \"St\", \\ 5");
        CHECK(dst.value("SELECT m::text FROM t_user_types WHERE id = 2") == "very \"happy\"");
        CHECK(dst.value("SELECT p FROM t_user_types WHERE id = 1") == "6");
    }

    SECTION("range and multirange types")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_ranges VALUES
              (1, '[1,10)', '[2024-01-01 00:00+00,infinity)', '(1.5,2.5]', '[2024-01-01,2024-02-01)', '{[1,3), [5,7)}'),
              (2, 'empty', 'empty', 'empty', 'empty', '{}'),
              (3, '(,5]', '(,)', '[NaN,NaN]', '(,2024-01-01]', '{(,0), [10,)}'),
              (4, NULL, NULL, NULL, NULL, NULL);
            UPDATE t_ranges SET r4 = r4 * '[5,20)', mr = mr + '{[3,5)}' WHERE id = 1;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT r4::text FROM t_ranges WHERE id = 3") == "(,6)");
        CHECK(dst.value("SELECT mr::text FROM t_ranges WHERE id = 1") == "{[1,7)}");
    }

    SECTION("generated columns (STORED) are recomputed on the target")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_generated (id, a, b) VALUES (1, 2, 3), (2, NULL, 5), (3, -4, 4);
            UPDATE t_generated SET a = 10 WHERE id = 1;
            UPDATE t_generated SET b = 7 WHERE id = 2;
            DELETE FROM t_generated WHERE id = 3;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT total || ' ' || label FROM t_generated WHERE id = 1") == "13 n=30");
        CHECK_FALSE(dst.scalar("SELECT total FROM t_generated WHERE id = 2").has_value());
    }

    SECTION("composite primary key, including an update of a key column")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_composite_pk VALUES
              ('us', 1, '2024-01-01', 'a'), ('us', 2, '2024-01-01', 'b'), ('eu', 1, '2024-01-01', 'c'),
              ('us', 1, '2024-01-02', 'd');
            UPDATE t_composite_pk SET val = 'a2' WHERE region = 'us' AND id = 1 AND day = '2024-01-01';
            UPDATE t_composite_pk SET region = 'asia' WHERE region = 'us' AND id = 2;
            UPDATE t_composite_pk SET day = day + 10 WHERE region = 'us' AND id = 1 AND day = '2024-01-02';
            DELETE FROM t_composite_pk WHERE region = 'eu';
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT string_agg(region || id || day || val, ',' ORDER BY region, id, day) "
                        "FROM t_composite_pk") == "asia22024-01-01b,us12024-01-01a2,us12024-01-12d");
    }

    SECTION("primary-key updates")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_pk_update SELECT g, 'v' || g FROM generate_series(1, 10) g;
            UPDATE t_pk_update SET id = id + 100 WHERE id <= 5;
            UPDATE t_pk_update SET id = -id, val = 'negated' WHERE id = 6;
            BEGIN;
            UPDATE t_pk_update SET id = 1000 WHERE id = 7;
            UPDATE t_pk_update SET id = 7 WHERE id = 8;
            UPDATE t_pk_update SET id = 8 WHERE id = 1000;
            COMMIT;
            DELETE FROM t_pk_update WHERE id = 101;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT string_agg(id || '=' || val, ',' ORDER BY id) FROM t_pk_update") ==
              "-6=negated,7=v8,8=v7,9=v9,10=v10,102=v2,103=v3,104=v4,105=v5");
    }

    SECTION("UPDATE leaving a ~1 MB TOASTed column unchanged")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_toast VALUES
              (1, 0, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 40000)),
                     (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 20000)), 'first'),
              (2, 0, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 40000)), NULL, 'second');
        )sql");
        REQUIRE(fx.converged(k_type_tables, 60s));
        // Only non-TOAST columns change: pgoutput sends the big values as "unchanged" ('u').
        src.exec("UPDATE t_toast SET counter = counter + 1 WHERE id = 1");
        src.exec("UPDATE t_toast SET note = 'second, updated', counter = 5 WHERE id = 2");
        // One big column changes, the other stays.
        src.exec("UPDATE t_toast SET big2 = 'small now', counter = counter + 1 WHERE id = 1");
        src.exec("UPDATE t_toast SET counter = counter + 1 WHERE id = 1");
        require_converged(fx);
        CHECK(src.value("SELECT length(big) FROM t_toast WHERE id = 1") == "1280000");
        check_same_value(fx, "SELECT md5(big) || md5(coalesce(big2, '')) || counter FROM t_toast WHERE id = 1");
        check_same_value(fx, "SELECT md5(big) || note FROM t_toast WHERE id = 2");
        CHECK(dst.value("SELECT counter FROM t_toast WHERE id = 1") == "3");
        // Deleting a TOASTed row.
        src.exec("DELETE FROM t_toast WHERE id = 2");
        require_converged(fx);
    }

    SECTION("REPLICA IDENTITY FULL without primary key, json and point columns, updated and deleted")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_full VALUES
              (1, '{"a":1}', '(1,2)', 'one'),
              (2, '{"b": [1,2]}', '(0.5,-3)', 'two'),
              (3, NULL, NULL, 'three'),
              (4, '{"x":  "spaced"}', '(1e-05,10000000000)', 'four'),
              (5, '{"keep": true}', '(5,5)', 'five');
            UPDATE t_full SET note = 'one updated' WHERE a = 1;
            UPDATE t_full SET j = '{"b": 3}' WHERE a = 2;
            UPDATE t_full SET note = 'three updated' WHERE a = 3;
            UPDATE t_full SET pt = '(9,9)' WHERE a = 1;
            DELETE FROM t_full WHERE a = 4;
            UPDATE t_full SET j = NULL, pt = NULL WHERE a = 5;
            DELETE FROM t_full WHERE a = 5;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT string_agg(a || ':' || note, ',' ORDER BY a) FROM t_full") ==
              "1:one updated,2:two,3:three updated");
    }

    SECTION("REPLICA IDENTITY FULL with duplicate rows: one of two identical rows is updated, then deleted")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_full VALUES (7, '{"dup": 1}', '(7,7)', 'dup'), (7, '{"dup": 1}', '(7,7)', 'dup');
        )sql");
        REQUIRE(fx.converged(k_type_tables, 60s));
        exec_statements(src, R"sql(
            UPDATE t_full SET note = 'dup changed' WHERE ctid = (SELECT ctid FROM t_full WHERE a = 7 LIMIT 1);
            DELETE FROM t_full WHERE ctid = (SELECT ctid FROM t_full WHERE note = 'dup' LIMIT 1);
            INSERT INTO t_full VALUES (8, '[]', '(0,0)', 'after');
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT string_agg(note, ',' ORDER BY note) FROM t_full") == "after,dup changed");
    }

    SECTION("TRUNCATE: single table, multi-table RESTART IDENTITY, inside a transaction")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_trunc_single SELECT g, 'old' FROM generate_series(1, 50) g;
            INSERT INTO t_trunc_a (v) SELECT 'a' || g FROM generate_series(1, 20) g;
            INSERT INTO t_trunc_b (v) SELECT 'b' || g FROM generate_series(1, 20) g;
        )sql");
        REQUIRE(fx.converged(k_type_tables, 60s));
        // A TRUNCATE is one statement on the target, and counted as one.
        const auto statements = [&] { return fx.daemon().metric("pgshift_apply_statements_total").value_or(-1); };
        const double before = statements();
        src.exec("TRUNCATE t_trunc_single");
        require_converged(fx);
        for (int i = 0; i < 50 && statements() < before + 1; ++i) // counted just after the commit
            std::this_thread::sleep_for(100ms);
        CHECK(statements() == before + 1);
        exec_statements(src, R"sql(
            INSERT INTO t_trunc_single SELECT g, 'old' FROM generate_series(1, 50) g;
            TRUNCATE t_trunc_single;
            INSERT INTO t_trunc_single VALUES (1, 'new after truncate');
            TRUNCATE t_trunc_a, t_trunc_b RESTART IDENTITY;
            INSERT INTO t_trunc_a (v) VALUES ('a-again-1'), ('a-again-2');
            INSERT INTO t_trunc_b (v) VALUES ('b-again-1');
            BEGIN;
            INSERT INTO t_trunc_single VALUES (2, 'gone');
            TRUNCATE t_trunc_single;
            INSERT INTO t_trunc_single VALUES (3, 'kept'), (1, 'kept too');
            COMMIT;
        )sql");
        require_converged(fx);
        // The identities restarted on the source, so the new rows reuse ids that existed before.
        CHECK(src.value("SELECT string_agg(id::text, ',' ORDER BY id) FROM t_trunc_a") == "1,2");
        CHECK(dst.value("SELECT string_agg(id || v, ',' ORDER BY id) FROM t_trunc_a") == "1a-again-1,2a-again-2");
        CHECK(dst.value("SELECT string_agg(id || v, ',' ORDER BY id) FROM t_trunc_single") == "1kept too,3kept");
    }

    SECTION("TRUNCATE ... CASCADE through a foreign key")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_parent SELECT g, 'p' || g FROM generate_series(1, 5) g;
            INSERT INTO t_child SELECT g, 1 + g % 5, 'c' || g FROM generate_series(1, 20) g;
        )sql");
        REQUIRE(fx.converged(k_type_tables, 60s));
        exec_statements(src, R"sql(
            TRUNCATE t_parent CASCADE;
            INSERT INTO t_parent VALUES (1, 'p1 again');
            INSERT INTO t_child VALUES (1, 1, 'c1 again');
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT count(*) FROM t_child") == "1");
    }

    SECTION("mixed-case, spaced and reserved-word schema, table and column names")
    {
        exec_statements(src, R"sql(
            INSERT INTO "My Schema"."select" VALUES
              (1, 'from-1', 'user "one"', 10, 'ü'), (2, 'from-2', NULL, 20, 'ß'), (3, 'from-3', 'x', 30, '😀');
            UPDATE "My Schema"."select" SET "User" = 'renamed', "we""ird col" = 11 WHERE "Order Id" = 1;
            UPDATE "My Schema"."select" SET "Order Id" = 20 WHERE "Order Id" = 2;
            DELETE FROM "My Schema"."select" WHERE "Order Id" = 3;
            INSERT INTO "My Schema"."Table With Spaces" VALUES ('k 1', 1, 'd1'), ('k 1', 2, 'd2'), ('K 1', 1, 'd3');
            UPDATE "My Schema"."Table With Spaces" SET "desc" = 'd2 updated' WHERE "Key Part" = 'k 1' AND "group" = 2;
            UPDATE "My Schema"."Table With Spaces" SET "group" = 9 WHERE "Key Part" = 'K 1';
            DELETE FROM "My Schema"."Table With Spaces" WHERE "Key Part" = 'k 1' AND "group" = 1;
        )sql");
        require_converged(fx);
        CHECK(dst.value(R"(SELECT string_agg("Order Id" || ':' || coalesce("User", '-'), ',' ORDER BY "Order Id")
                           FROM "My Schema"."select")") == "1:renamed,20:-");
    }

    SECTION("rolled-back transaction and savepoints with part of the work kept")
    {
        exec_statements(src, R"sql(
            INSERT INTO t_tx VALUES (1, 'committed');
            BEGIN;
            INSERT INTO t_tx VALUES (2, 'rolled back');
            UPDATE t_tx SET v = 'rolled back too' WHERE id = 1;
            ROLLBACK;
            BEGIN;
            INSERT INTO t_tx VALUES (3, 'kept before savepoint');
            SAVEPOINT s1;
            INSERT INTO t_tx VALUES (4, 'undone by rollback to s1');
            UPDATE t_tx SET v = 'undone' WHERE id = 1;
            ROLLBACK TO SAVEPOINT s1;
            INSERT INTO t_tx VALUES (5, 'kept after rollback to s1');
            SAVEPOINT s2;
            UPDATE t_tx SET v = 'kept, released s2' WHERE id = 1;
            SAVEPOINT s3;
            DELETE FROM t_tx WHERE id = 3;
            ROLLBACK TO SAVEPOINT s3;
            RELEASE SAVEPOINT s2;
            COMMIT;
            BEGIN;
            SAVEPOINT sp_all;
            INSERT INTO t_tx VALUES (6, 'whole transaction rolled back');
            RELEASE SAVEPOINT sp_all;
            ROLLBACK;
        )sql");
        require_converged(fx);
        CHECK(dst.value("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t_tx") ==
              "1=kept, released s2,3=kept before savepoint,5=kept after rollback to s1");
    }
}

namespace {

struct LoadResult {
    int committed = 0;
    int rolled_back = 0;
    std::string error; ///< a failure other than the expected conflicts
};

/// A few hundred random transactions on shared tables with overlapping keys.
LoadResult run_load(const std::string& conninfo, int thread_no, int transactions)
{
    LoadResult result;
    try {
        pgshift::pg::Connection conn(conninfo);
        std::mt19937 rng(static_cast<unsigned>(1000 + thread_no));
        auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
        auto s = [](int v) { return std::optional<std::string>(std::to_string(v)); };
        for (int n = 0; n < transactions; ++n) {
            try {
                conn.exec("BEGIN");
                const int ops = pick(1, 6);
                for (int op = 0; op < ops; ++op) {
                    const int k = pick(0, 99);
                    switch (pick(0, 10)) {
                    case 0:
                    case 1:
                        conn.exec_params("INSERT INTO load_a VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
                                         "SET v = load_a.v + excluded.v, s = excluded.s",
                                         {s(k), s(pick(1, 9)), "t" + std::to_string(thread_no) + " n" + std::to_string(n)});
                        break;
                    case 2:
                        conn.exec_params("UPDATE load_a SET v = v + 1, s = $2 WHERE id = $1",
                                         {s(k), std::string("upd\t") + std::to_string(n)});
                        break;
                    case 3:
                        conn.exec_params("DELETE FROM load_a WHERE id = $1", {s(k)});
                        break;
                    case 4:
                        conn.exec_params("INSERT INTO load_b VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                         {s(k % 20), s(pick(0, 9)), "b" + std::to_string(n), s(pick(-5, 5))});
                        break;
                    case 5:
                        conn.exec_params("UPDATE load_b SET k2 = $3, n = n * 2 WHERE k1 = $1 AND k2 = $2 AND NOT "
                                         "EXISTS (SELECT 1 FROM load_b WHERE k1 = $1 AND k2 = $3)",
                                         {s(k % 20), s(pick(0, 9)), s(pick(0, 9))});
                        break;
                    case 6:
                        conn.exec_params("DELETE FROM load_b WHERE k1 = $1", {s(k % 20)});
                        break;
                    case 7:
                        conn.exec_params("INSERT INTO load_u VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                         {s(k), s(pick(0, 149)), s(n)});
                        break;
                    case 8:
                        conn.exec_params("UPDATE load_u SET code = $2 WHERE id = $1", {s(k), s(pick(0, 149))});
                        break;
                    case 9:
                        conn.exec_params("DELETE FROM load_u WHERE code = $1", {s(pick(0, 149))});
                        break;
                    default:
                        conn.exec_params("UPDATE load_a SET v = v * 2 % 1000003 WHERE id BETWEEN $1 AND $1 + 10",
                                         {s(k)});
                        break;
                    }
                }
                conn.exec_params("INSERT INTO load_log VALUES ($1, $2, $3)", {s(thread_no), s(n), std::nullopt});
                if (pick(0, 9) == 0) {
                    conn.exec("ROLLBACK");
                    ++result.rolled_back;
                } else {
                    conn.exec("COMMIT");
                    ++result.committed;
                }
            } catch (const pgshift::pg::PgError& e) {
                // Expected with overlapping keys: deadlocks and unique conflicts roll the transaction back.
                if (e.sqlstate() != "40P01" && e.sqlstate() != "40001" && e.sqlstate() != "23505")
                    throw;
                conn.exec("ROLLBACK");
                ++result.rolled_back;
            }
        }
    } catch (const std::exception& e) {
        result.error = "thread " + std::to_string(thread_no) + ": " + e.what();
    }
    return result;
}

} // namespace

TEST_CASE("types: concurrent write load from 4 connections converges", "[integration][types][load]")
{
    const int workers = GENERATE(1, 4);
    DYNAMIC_SECTION("4 writers, overlapping keys, " << workers << " apply worker(s)")
    {
        ReplicationFixture fx(fixture_options(workers));
        REQUIRE(fx.start_and_wait_streaming(30s));
        fx.source().exec("INSERT INTO load_a SELECT g, g, 'seed' FROM generate_series(0, 99) g");

        std::vector<LoadResult> results(4);
        {
            std::vector<std::thread> threads;
            for (int i = 0; i < 4; ++i)
                threads.emplace_back([&, i] { results[static_cast<std::size_t>(i)] = run_load(fx.source().conninfo(), i, 300); });
            for (auto& t : threads)
                t.join();
        }
        int committed = 0;
        for (const auto& r : results) {
            INFO(r.error);
            CHECK(r.error.empty());
            committed += r.committed;
        }
        CHECK(committed > 600);
        CHECK(fx.source().value("SELECT count(*) FROM load_log") == std::to_string(committed));

        require_converged(fx, 90s);
        CHECK(fx.target().value("SELECT count(*) FROM load_log") == std::to_string(committed));
    }
}

TEST_CASE("types: the target conninfo's options reach the apply sessions, pgshift's own settings after them",
          "[integration][types]")
{
    // A provider may need `options` to route a connection (Neon's endpoint=...), an operator may
    // set -c switches there: apply must keep them, and still have its own settings win.
    FixtureOptions o;
    o.schema_sql = "CREATE TABLE tagged (id int PRIMARY KEY, v text);";
    o.daemon.name = "options";
    o.daemon.workers = 2;
    o.daemon_conninfo_suffix = " options='-c pgshift_test.tag=from-conninfo -c search_path=public'";
    ReplicationFixture fx(o);
    // Target-only columns whose defaults record the settings of the session that inserted the row.
    fx.target().exec("ALTER TABLE tagged ADD COLUMN tag text DEFAULT current_setting('pgshift_test.tag', true), "
                     "ADD COLUMN path text DEFAULT current_setting('search_path'), "
                     "ADD COLUMN rls text DEFAULT current_setting('row_security'), "
                     "ADD COLUMN ro text DEFAULT current_setting('default_transaction_read_only'), "
                     "ADD COLUMN iso text DEFAULT current_setting('transaction_isolation')");
    // A database that defaults to serializable transactions: apply runs read committed anyway.
    fx.target().exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = "
                     "serializable', current_database()); END $$");
    REQUIRE(fx.start_and_wait_streaming(30s));
    fx.source().exec("INSERT INTO tagged SELECT g, 'many' FROM generate_series(1, 200) g"); // a COPY
    fx.source().exec("INSERT INTO tagged VALUES (1000, 'one')");                             // an INSERT
    fx.source().exec("UPDATE tagged SET v = 'changed' WHERE id = 1");
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (fx.target().scalar("SELECT count(*) FROM tagged WHERE v = 'changed'") != "1" &&
           std::chrono::steady_clock::now() < deadline && fx.daemon().running())
        std::this_thread::sleep_for(100ms);
    REQUIRE(fx.target().scalar("SELECT count(*) FROM tagged") == "201");
    CHECK(fx.target().scalar("SELECT count(*) FROM tagged WHERE tag = 'from-conninfo'") == "201");
    CHECK(fx.target().scalar("SELECT string_agg(DISTINCT path, ',') FROM tagged") == "pg_catalog");
    // pg::k_all_rows and pg::k_writable reach every apply session too.
    CHECK(fx.target().scalar("SELECT string_agg(DISTINCT rls || '/' || ro || '/' || iso, ',') FROM tagged") ==
          "off/off/read committed");
    CHECK(fx.daemon().running());
}

TEST_CASE("types: timeouts and a read-only default set for the databases stop none of pgshift's work",
          "[integration][types]")
{
    // Databases often carry ALTER DATABASE ... SET statement_timeout for their applications. A
    // table's copy, an index build or a large transaction's apply takes longer, and a cancelled
    // apply would fail at every retry. 200 ms: the copy of a million rows and its primary key take
    // longer, pgshift's short catalog queries (which send no options) do not; 1 ms idle in a
    // transaction: a worker waiting at the commit gate, the walsender holding the snapshot; 500 ms
    // idle (PostgreSQL 14+): the copy's target session waiting to build the primary key, and the
    // apply sessions while the source is quiet. And a target that defaults to read-only
    // transactions, as runbooks make a server that is not the primary (pgshift writes anyway).
    FixtureOptions o;
    o.schema_sql = "CREATE TABLE big (id int PRIMARY KEY, v text);";
    o.schema_on_target = false; // schema: copy, so the primary key is built after the copy
    o.daemon.name = "timeouts";
    o.daemon.initial_copy = true;
    o.daemon.schema = "copy";
    o.daemon.workers = 2;
    ReplicationFixture fx(o);
    fx.source().exec("INSERT INTO big SELECT g, repeat('x', 40) FROM generate_series(1, 1000000) g");
    const char* k_timeouts = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = 200', "
                             "current_database()); EXECUTE format('ALTER DATABASE %I SET lock_timeout = 1', "
                             "current_database()); EXECUTE format('ALTER DATABASE %I SET "
                             "idle_in_transaction_session_timeout = 1', current_database()); EXECUTE "
                             "format('ALTER DATABASE %I SET idle_session_timeout = 500', current_database()); END $$";
    fx.source().exec(k_timeouts);
    fx.target().exec(k_timeouts);
    fx.target().exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', "
                     "current_database()); END $$");
    for (auto* c : {&fx.source(), &fx.target()})
        CHECK(c->scalar("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                        "WHERE d.datname = current_database() AND s.setconfig @> "
                        "'{statement_timeout=200,lock_timeout=1,idle_in_transaction_session_timeout=1,idle_session_timeout=500}'") ==
              "1");
    CHECK(fx.target().scalar("SELECT count(*) FROM pg_db_role_setting WHERE setconfig @> "
                             "'{default_transaction_read_only=on}'") == "1");
    REQUIRE(fx.start_and_wait_streaming(60s));
    // One more transaction, of 600,000 rows.
    fx.source().exec("INSERT INTO big SELECT g, repeat('y', 40) FROM generate_series(1000001, 1600000) g");
    const auto deadline = std::chrono::steady_clock::now() + 90s;
    auto applied = [&] {
        return fx.target().scalar("SELECT count(*) FROM pg_class WHERE relname = 'big'") == "1" &&
               fx.target().scalar("SELECT count(*) FROM big") == "1600000";
    };
    while (!applied() && std::chrono::steady_clock::now() < deadline && fx.daemon().running())
        std::this_thread::sleep_for(250ms);
    CHECK(fx.target().scalar("SELECT count(*) FROM big") == "1600000");
    CHECK(fx.target().scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'public.big'::regclass "
                             "AND indisprimary") == "1");
    // A quiet source for 4 idle timeouts, then one more row.
    std::this_thread::sleep_for(2s);
    fx.source().exec("INSERT INTO big VALUES (0, 'after a quiet spell')");
    const auto again = std::chrono::steady_clock::now() + 30s;
    while (fx.target().scalar("SELECT count(*) FROM big WHERE id = 0") != "1" && std::chrono::steady_clock::now() < again)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().scalar("SELECT count(*) FROM big WHERE id = 0") == "1");
    // A change that waits 1.5 s for a lock on the target (this session predates the database's
    // settings): longer than the lock timeout (1 ms, not retryable: apply would stop) and the
    // statement timeout.
    fx.target().exec("BEGIN");
    fx.target().exec("LOCK TABLE big IN SHARE MODE");
    fx.source().exec("INSERT INTO big VALUES (-1, 'after a lock wait')");
    std::this_thread::sleep_for(1500ms);
    fx.target().exec("COMMIT");
    const auto unlocked = std::chrono::steady_clock::now() + 30s;
    while (fx.target().scalar("SELECT count(*) FROM big WHERE id = -1") != "1" &&
           std::chrono::steady_clock::now() < unlocked)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().scalar("SELECT count(*) FROM big WHERE id = -1") == "1");
    // An index made on the source: built on the target by the schema follower, past the 200 ms
    // statement timeout and the read-only default.
    fx.source().exec("CREATE INDEX big_v_idx ON big (v)");
    const auto indexed = std::chrono::steady_clock::now() + 60s;
    while (fx.target().scalar("SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('big_v_idx') AND "
                              "indisvalid") != "1" &&
           std::chrono::steady_clock::now() < indexed)
        std::this_thread::sleep_for(200ms);
    CHECK(fx.target().scalar("SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('big_v_idx') AND "
                             "indisvalid") == "1");
    std::ifstream log(fx.daemon().log_path());
    const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    CHECK(text.find("statement timeout") == std::string::npos);
    CHECK(text.find("lock timeout") == std::string::npos);
    CHECK(text.find("idle-in-transaction timeout") == std::string::npos);
    CHECK(text.find("idle-session timeout") == std::string::npos);
    CHECK(text.find("closed the connection") == std::string::npos); // how a session ended by the server shows
    CHECK(fx.daemon().running());
}
