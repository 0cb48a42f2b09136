// Self-tests of the integration harness: clusters start, answer SQL, digests tell tables apart.
#include "harness/cluster.hpp"
#include "harness/sql_helpers.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

using namespace pgshift::test;

TEST_CASE("harness: a cluster starts and answers SQL", "[harness]")
{
    std::filesystem::path dir;
    {
        TestCluster cluster;
        dir = cluster.data_dir();
        REQUIRE(std::filesystem::exists(dir / "PG_VERSION"));
        CHECK(cluster.port() > 0);
        CHECK(cluster.conninfo() == "host=127.0.0.1 port=" + std::to_string(cluster.port()) +
                                        " dbname=postgres user=postgres");
        CHECK(cluster.value("SELECT 1 + 1") == "2");
        CHECK(cluster.value("SHOW wal_level") == "logical");
        CHECK(cluster.value("SHOW max_replication_slots") == "20");
        CHECK(cluster.value("SHOW listen_addresses") == "127.0.0.1");

        auto rows = cluster.query("SELECT 'a', NULL::text UNION ALL SELECT 'b''c', 'd'");
        REQUIRE(rows.size() == 2);
        CHECK(rows[0][0] == "a");
        CHECK_FALSE(rows[0][1].has_value());
        CHECK(rows[1][0] == "b'c");
        CHECK(rows[1][1] == "d");

        auto res = cluster.exec_params("SELECT $1::int * 2", {std::string("21")});
        CHECK(res.str(0, 0) == "42");

        // Extra settings reach the server.
        TestCluster tuned({"max_locks_per_transaction=77"});
        CHECK(tuned.value("SHOW max_locks_per_transaction") == "77");
        CHECK(tuned.port() != cluster.port());
    }
    // The destructor stopped the server and removed its directory.
    CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("harness: digests tell equal and different tables apart", "[harness]")
{
    TestCluster a;
    TestCluster b;
    const std::string schema = R"sql(
        CREATE SCHEMA "My Schema";
        CREATE TABLE "My Schema"."select" ("Order Id" int PRIMARY KEY, v text);
        CREATE TABLE public.t (id int PRIMARY KEY, v text);
    )sql";
    exec_on_both(a, b, schema);
    const std::vector<std::string> tables = {"public.t", R"("My Schema"."select")"};

    // Same rows, different insertion order: equal digests.
    a.exec("INSERT INTO public.t VALUES (1, 'x'), (2, NULL), (3, E'tab\\there')");
    b.exec("INSERT INTO public.t VALUES (3, E'tab\\there'), (1, 'x'), (2, NULL)");
    {
        auto ca = a.connect();
        auto cb = b.connect();
        CHECK(table_digest(ca, "public.t") == table_digest(cb, "public.t"));
        CHECK(table_digest(ca, "public.t").count == "3");
        CHECK(compare_tables(ca, cb, tables).empty());
    }
    CHECK(wait_until_converged(a, b, tables, std::chrono::seconds(2)));

    // One different value: the digest and the comparison notice, and the wait times out.
    b.exec(R"(INSERT INTO "My Schema"."select" VALUES (1, 'only on b'))");
    {
        auto ca = a.connect();
        auto cb = b.connect();
        auto diffs = compare_tables(ca, cb, tables);
        REQUIRE(diffs.size() == 1);
        CHECK(diffs[0].find(R"("My Schema"."select")") == 0);
    }
    CHECK_FALSE(wait_until_converged(a, b, tables, std::chrono::seconds(1)));

    // NULL and empty string differ.
    a.exec("UPDATE public.t SET v = '' WHERE id = 2");
    {
        auto ca = a.connect();
        auto cb = b.connect();
        CHECK_FALSE(table_digest(ca, "public.t") == table_digest(cb, "public.t"));
    }

    // A missing table is reported, not thrown.
    {
        auto ca = a.connect();
        auto cb = b.connect();
        auto diffs = compare_tables(ca, cb, {"public.nope"});
        REQUIRE(diffs.size() == 1);
        CHECK(diffs[0].find("source error") != std::string::npos);
    }
}
