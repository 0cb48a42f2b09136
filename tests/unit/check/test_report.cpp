// Unit tests for the check report's two shapes: the text lines and the JSON document.
#include "pgshift/check/check.hpp"

#include <catch2/catch.hpp>

using namespace pgshift::check;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("text: one line per problem, then a summary, and warnings do not fail", "[check][report]")
{
    Report r;
    r.source_version = "15.4";
    r.target_version = "16.2";
    r.tables = 3;
    r.problems.push_back({Severity::warning, Side::source, "wal_keep_size", "max_slot_wal_keep_size is -1"});
    CHECK(r.ok());
    CHECK(to_text(r) == "warning: source: max_slot_wal_keep_size is -1\n"
                        "check passed: pgshift run can start (source PostgreSQL 15.4, target PostgreSQL 16.2, "
                        "3 tables, 1 warning)\n");
    r.problems.push_back({Severity::error, Side::target, "missing_table", "table public.t does not exist"});
    CHECK_FALSE(r.ok());
    CHECK(r.count(Severity::error) == 1);
    auto text = to_text(r);
    CHECK_THAT(text, Contains("\nerror: target: table public.t does not exist\n"));
    CHECK_THAT(text, Contains("\ncheck failed: 1 error, 1 warning;"));
}

TEST_CASE("json: ok, counts and every problem with severity, side, code and message", "[check][report]")
{
    Report r;
    r.problems.push_back({Severity::error, Side::config, "config", "a \"quoted\"\nmessage"});
    auto json = to_json(r);
    CHECK_THAT(json, StartsWith("{\"ok\":false,\"errors\":1,\"warnings\":0,\"source_version\":null,"
                                "\"target_version\":null,\"tables\":null,\"problems\":[{"));
    CHECK_THAT(json, Contains("\"severity\":\"error\""));
    CHECK_THAT(json, Contains("\"side\":\"config\""));
    CHECK_THAT(json, Contains("\"code\":\"config\""));
    CHECK_THAT(json, Contains("\"message\":\"a \\\"quoted\\\"\\nmessage\""));
    CHECK(json.back() == '\n');
}
