// Integration: partitioned tables published through their root — routing, cross-partition updates,
// TRUNCATE of the partitioned table, and a partitioned target whose partitions differ.
#include "harness/replication_fixture.hpp"

#include <catch2/catch.hpp>

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
    CHECK(fx.target().value("SELECT count(*) FROM measures_eu WHERE id % 2 = 0") == "0");
    CHECK(fx.target().value("SELECT count(*) FROM measures_rest") ==
          fx.source().value("SELECT count(*) FROM measures_other"));

    exec_statements(fx.source(), "TRUNCATE measures");
    exec_statements(fx.source(), "INSERT INTO measures VALUES ('eu', 1, 1, '{}')");
    REQUIRE(fx.converged(tables, 60s));
    CHECK(fx.target().value("SELECT count(*) FROM measures") == "1");
    CHECK(fx.daemon().running());
}
