// Integration: partitioned tables published through their root — routing, cross-partition updates,
// TRUNCATE of the partitioned table, and a partitioned target whose partitions differ.
#include "harness/replication_fixture.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

TEST_CASE("partitioned: rows, cross-partition updates and TRUNCATE replicate through the root",
          "[integration][partitioned]")
{
    FixtureOptions o;
    o.daemon.name = "parts";
    o.daemon.log_level = "info";
    o.schema_sql = R"sql(
        CREATE TABLE measures (region text NOT NULL, id int NOT NULL, v numeric, doc json,
                               PRIMARY KEY (region, id)) PARTITION BY LIST (region);
        CREATE TABLE measures_eu PARTITION OF measures FOR VALUES IN ('eu');
        CREATE TABLE measures_us PARTITION OF measures FOR VALUES IN ('us');
        CREATE TABLE measures_other PARTITION OF measures DEFAULT;
        CREATE TABLE events (at date NOT NULL, n int, note text) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        ALTER TABLE events REPLICA IDENTITY FULL;
        ALTER TABLE events_2025 REPLICA IDENTITY FULL;
        ALTER TABLE events_2026 REPLICA IDENTITY FULL;
    )sql";
    ReplicationFixture fx(o);
    // The target may partition differently: the rows are routed by the target's own scheme.
    fx.target().exec("DROP TABLE measures_other; CREATE TABLE measures_rest PARTITION OF measures DEFAULT");
    REQUIRE(fx.start_and_wait_streaming(30s));
    const std::vector<std::string> tables = {"public.measures", "public.events"};

    exec_statements(fx.source(), R"sql(
        INSERT INTO measures SELECT (ARRAY['eu','us','apac'])[1 + g % 3], g, g * 1.5, json_build_object('g', g)
          FROM generate_series(1, 300) g;
        INSERT INTO events SELECT DATE '2025-03-01' + (g % 300), g, 'n' || g FROM generate_series(1, 400) g;
        UPDATE measures SET region = 'us' WHERE region = 'eu' AND id % 2 = 0;
        UPDATE measures SET v = v + 1 WHERE region = 'apac';
        DELETE FROM measures WHERE id % 10 = 0;
        UPDATE events SET at = at + 200 WHERE n % 5 = 0;
        DELETE FROM events WHERE n % 7 = 0;
    )sql");
    REQUIRE(fx.converged(tables, 60s));
    // Planner statistics of the partitioned table: autovacuum never makes them (the source's
    // come from an ANALYZE), so the target would plan without them; the follower analyzes it.
    exec_statements(fx.source(), "ANALYZE measures");
    const std::string stats = "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 'measures' AND inherited";
    REQUIRE(fx.source().value(stats) == "t");
    for (int i = 0; i < 300 && fx.target().value(stats) != "t"; ++i)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().value(stats) == "t");
    CHECK(fx.target().value("SELECT count(*) FROM measures_eu WHERE id % 2 = 0") == "0");
    CHECK(fx.target().value("SELECT count(*) FROM measures_rest") ==
          fx.source().value("SELECT count(*) FROM measures_other"));

    exec_statements(fx.source(), "TRUNCATE measures");
    exec_statements(fx.source(), "INSERT INTO measures VALUES ('eu', 1, 1, '{}')");
    REQUIRE(fx.converged(tables, 60s));
    CHECK(fx.target().value("SELECT count(*) FROM measures") == "1");
    CHECK(fx.daemon().running());
}

TEST_CASE("partitioned: partitions made on the source later are created on the target, at once when a row needs one",
          "[integration][partitioned]")
{
    FixtureOptions o;
    o.daemon.name = "newparts";
    o.daemon.log_level = "info";
    o.schema_sql = R"sql(
        CREATE TABLE events (at date NOT NULL, n int NOT NULL, note text, PRIMARY KEY (at, n)) PARTITION BY RANGE (at);
        CREATE INDEX events_note ON events (note);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    )sql";
    ReplicationFixture fx(o);
    REQUIRE(fx.start_and_wait_streaming(30s));
    const std::string partitions =
        "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) || ' ' || c.relkind::text, ', ' "
        "ORDER BY c.relname) FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid WHERE t.level > 0";
    // A partition made ahead of its rows (as pg_partman does), written within the same second:
    // apply meets the row before the follower's next look, and the partition is made then.
    exec_statements(fx.source(), R"sql(
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO events VALUES ('2025-05-01', 1, 'old range'), ('2026-05-01', 2, 'new range');
    )sql");
    REQUIRE(fx.converged({"public.events"}, 60s));
    // One made ahead and not written yet, itself partitioned: the follower makes both levels.
    exec_statements(fx.source(), R"sql(
        CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01') PARTITION BY RANGE (at);
        CREATE TABLE events_2027_h1 PARTITION OF events_2027 FOR VALUES FROM ('2027-01-01') TO ('2027-07-01');
    )sql");
    const auto on_source = fx.source().value(partitions);
    for (int i = 0; i < 300 && fx.target().value(partitions) != on_source; ++i)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().value(partitions) == on_source);
    // They carry the parent's indexes.
    CHECK(fx.target().value("SELECT count(*) FROM pg_indexes WHERE tablename = 'events_2027_h1'") == "2");
    exec_statements(fx.source(), "INSERT INTO events VALUES ('2027-02-01', 3, 'pre-made range')");
    REQUIRE(fx.converged({"public.events"}, 60s));
    const auto log = fx.daemon().log_tail(400);
    INFO(log);
    CHECK(log.find("apply stopped") == std::string::npos);
    CHECK(log.find("the target has no partition of public.events for a row the source has: creating partition "
                   "public.events_2026 on the target (schema: copy), then applying again") != std::string::npos);
    CHECK(log.find("partition public.events_2027_h1 of public.events") != std::string::npos);
}

TEST_CASE("partitioned: partitions the source drops or detaches are detached on the target past the drop, rows kept",
          "[integration][partitioned]")
{
    FixtureOptions o;
    o.daemon.name = "goneparts";
    o.daemon.log_level = "info";
    o.schema_sql = R"sql(
        CREATE TABLE events (at date NOT NULL, n int NOT NULL, note text, PRIMARY KEY (at, n)) PARTITION BY RANGE (at);
        CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')
          PARTITION BY RANGE (at);
        CREATE TABLE events_2023_h1 PARTITION OF events_2023 FOR VALUES FROM ('2023-01-01') TO ('2023-07-01');
        CREATE TABLE events_2023_h2 PARTITION OF events_2023 FOR VALUES FROM ('2023-07-01') TO ('2024-01-01');
        CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE events_default PARTITION OF events DEFAULT;
    )sql";
    ReplicationFixture fx(o);
    REQUIRE(fx.start_and_wait_streaming(30s));
    const std::string partitions =
        "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), ', ' ORDER BY c.relname) "
        "FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid WHERE t.level > 0";
    exec_statements(fx.source(), R"sql(
        INSERT INTO events SELECT DATE '2023-01-01' + (g % 1460), g, 'n' || g FROM generate_series(1, 2000) g;
    )sql");
    REQUIRE(fx.converged({"public.events"}, 60s));
    const auto rows_2024 = fx.source().value("SELECT count(*) FROM events_2024 WHERE n % 3 <> 0");
    const auto rows_2023 = fx.source().value("SELECT count(*) FROM events_2023");
    REQUIRE(std::stoi(rows_2024) > 300);
    // A retention job: changes to the old rows just before it, a dropped partition, a dropped
    // sub-partitioned one, one detached and kept (pg_partman's retention_keep_table); writes go on.
    exec_statements(fx.source(), R"sql(
        UPDATE events SET note = 'last change' WHERE at < '2025-01-01' AND n % 3 = 1;
        DELETE FROM events WHERE at >= '2024-01-01' AND at < '2025-01-01' AND n % 3 = 0;
        DROP TABLE events_2024;
        DROP TABLE events_2023;
        ALTER TABLE events DETACH PARTITION events_2025;
        INSERT INTO events SELECT DATE '2026-01-01' + (g % 365), g, 'after' FROM generate_series(3001, 3300) g;
    )sql");
    const auto on_source = fx.source().value(partitions);
    for (int i = 0; i < 400 && fx.target().value(partitions) != on_source; ++i)
        std::this_thread::sleep_for(100ms);
    INFO(fx.daemon().log_tail(80));
    REQUIRE(fx.target().value(partitions) == on_source);
    exec_statements(fx.source(), "INSERT INTO events VALUES ('2024-05-01', 5000, 'into the default now')");
    REQUIRE(fx.converged({"public.events"}, 60s));
    // The detached tables keep exactly the rows the source's had when it dropped them.
    CHECK(fx.target().value("SELECT count(*) FROM events_2024") == rows_2024);
    CHECK(fx.target().value("SELECT count(*) FROM events_2024 WHERE n % 3 = 1 AND note <> 'last change'") == "0");
    CHECK(fx.target().value("SELECT count(*) FROM events_2023") == rows_2023);
    CHECK(fx.target().value("SELECT count(*) FROM events_2025") == fx.source().value("SELECT count(*) FROM events_2025"));

    // A row of the dropped range written before pgshift looked (the default partition takes it
    // on the source): the target's partition mixes it with the dropped rows, so it is left by hand.
    exec_statements(fx.source(), R"sql(
        DROP TABLE events_2026;
        INSERT INTO events VALUES ('2026-06-01', 9999, 'late');
    )sql");
    std::string log;
    for (int i = 0; i < 300; ++i) {
        log = fx.daemon().log_tail(200);
        if (log.find("holds rows of its range") != std::string::npos)
            break;
        std::this_thread::sleep_for(100ms);
    }
    INFO(log);
    CHECK(log.find("partition public.events_2026 of public.events: detaching it on the target waits") !=
          std::string::npos);
    CHECK(log.find("holds rows of its range") != std::string::npos);
    CHECK(fx.target().value("SELECT count(*) FROM pg_inherits WHERE inhrelid = 'events_2026'::regclass") == "1");
    CHECK(log.find("apply stopped") == std::string::npos);
    CHECK(fx.daemon().running());
}
