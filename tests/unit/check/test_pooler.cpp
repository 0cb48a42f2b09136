// Unit tests for pooler detection from a conninfo: port 6543, Supabase's pooler hosts, host
// lists, URIs, libpq's environment defaults.
#include "pgshift/check/pooler.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace pgshift;
using namespace pgshift::check;
using Catch::Matchers::Contains;

namespace {

config::EnvLookup env(std::map<std::string, std::string> vars = {})
{
    return [vars](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
}

} // namespace

TEST_CASE("port 6543 is a transaction pooler, in key=value and URI form", "[check][pooler]")
{
    for (const char* conninfo : {"host=db.example.com port=6543 dbname=shop",
                                 "postgresql://app@db.example.com:6543/shop",
                                 "postgres://app:secret@db.example.com:6543/shop?sslmode=require"}) {
        INFO(conninfo);
        auto hints = find_poolers(conninfo, env());
        REQUIRE(hints.size() == 1);
        CHECK(hints[0].host == "db.example.com");
        CHECK(hints[0].port == "6543");
        CHECK_THAT(hints[0].why, Contains("transaction pooler"));
        CHECK_THAT(hints[0].why, Contains("port 5432"));
        CHECK_THAT(hints[0].why, !Contains("secret"));
    }
}

TEST_CASE("a direct connection is not a pooler", "[check][pooler]")
{
    CHECK(find_poolers("host=db.example.com port=5432 dbname=shop", env()).empty());
    CHECK(find_poolers("postgresql://db.abcdef.supabase.co:5432/postgres", env()).empty());
    CHECK(find_poolers("host=127.0.0.1 port=16543", env()).empty());
    CHECK(find_poolers("dbname=shop", env()).empty()); // local socket, 5432
}

TEST_CASE("Supabase's pooler host is a pooler on either port", "[check][pooler]")
{
    auto session = find_poolers("host=aws-0-eu-central-1.pooler.supabase.com port=5432 user=postgres.abc", env());
    REQUIRE(session.size() == 1);
    CHECK_THAT(session[0].why, Contains("Supavisor"));
    CHECK_THAT(session[0].why, Contains("db.<project>.supabase.co:5432"));
    CHECK(find_poolers("postgresql://postgres.abc@AWS-0-EU-CENTRAL-1.POOLER.SUPABASE.COM/postgres", env()).size() == 1);
    CHECK(find_poolers("host=pooler.supabase.com.example.org", env()).empty());
}

TEST_CASE("host and port lists pair up, and one port applies to every host", "[check][pooler]")
{
    auto paired = find_poolers("host=a,b,c port=5432,6543,5432", env());
    REQUIRE(paired.size() == 1);
    CHECK(paired[0].host == "b");
    auto shared = find_poolers("host=a,b port=6543", env());
    REQUIRE(shared.size() == 2);
    CHECK(shared[0].host == "a");
    CHECK(shared[1].host == "b");
    auto uri = find_poolers("postgresql://a:5432,b:6543/shop", env());
    REQUIRE(uri.size() == 1);
    CHECK(uri[0].host == "b");
}

TEST_CASE("PGPORT and PGHOST fill in what the conninfo leaves out, as in libpq", "[check][pooler]")
{
    auto from_env = find_poolers("dbname=shop", env({{"PGPORT", "6543"}, {"PGHOST", "pool.internal"}}));
    REQUIRE(from_env.size() == 1);
    CHECK(from_env[0].host == "pool.internal");
    CHECK(from_env[0].port == "6543");
    // The conninfo wins over the environment.
    CHECK(find_poolers("host=db port=5432", env({{"PGPORT", "6543"}})).empty());
    CHECK(find_poolers("hostaddr=10.0.0.5", env({{"PGPORT", "6543"}})).size() == 1);
}

TEST_CASE("an unparsable conninfo is a ConfigError", "[check][pooler]")
{
    CHECK_THROWS_AS(find_poolers("host=a x", env()), ConfigError);
}
