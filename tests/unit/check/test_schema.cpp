// Unit tests for the source/target schema comparison (`pgshift check`, schema: verify).
#include "pgshift/check/schema.hpp"

#include <catch2/catch.hpp>

using namespace pgshift::check;
using Catch::Matchers::Contains;

namespace {

ColumnDef col(std::string name, std::string type, bool not_null = false, bool has_default = false,
              bool generated = false)
{
    return {name, name, std::move(type), not_null, has_default, generated};
}

TableDef table(std::string name, std::vector<ColumnDef> columns, bool exists = true)
{
    return {"public", name, "public." + name, exists, std::move(columns)};
}

} // namespace

TEST_CASE("identical tables, and extra nullable or defaulted target columns, match", "[check][schema]")
{
    std::vector<TableDef> src{table("orders", {col("id", "integer", true), col("amount", "numeric(10,2)")})};
    CHECK(compare_schemas(src, src).empty());
    std::vector<TableDef> dst{table("orders", {col("amount", "numeric(10,2)"), col("id", "integer", true),
                                               col("note", "text"), col("at", "timestamp with time zone", true, true),
                                               col("total", "numeric", true, false, true)})};
    CHECK(compare_schemas(src, dst).empty()); // column order does not matter: columns map by name
}

TEST_CASE("every difference is reported, each with its fix", "[check][schema]")
{
    std::vector<TableDef> src{
        table("orders", {col("id", "integer", true), col("amount", "numeric(10,2)"), col("note", "text"),
                         col("tag", "character varying(20)"), col("twice", "integer", false, false, true)}),
        table("items", {col("id", "bigint", true)}),
    };
    std::vector<TableDef> dst{
        table("orders", {col("id", "integer", true), col("amount", "numeric(12,2)"),
                         col("tag", "text", false, false, true), col("sku", "text", true)}),
        table("items", {}, false),
    };
    auto d = compare_schemas(src, dst);
    REQUIRE(d.size() == 5);
    CHECK(d[0].kind == DifferenceKind::column_type);
    CHECK(d[0].column == "amount");
    CHECK(d[0].message == "table public.orders, column amount is numeric(10,2) on the source but numeric(12,2) on "
                          "the target: ALTER TABLE public.orders ALTER COLUMN amount TYPE numeric(10,2) on the target");
    CHECK(d[1].kind == DifferenceKind::missing_column);
    CHECK(d[1].column == "note");
    CHECK_THAT(d[1].message, Contains("ALTER TABLE public.orders ADD COLUMN note text"));
    // A type difference is reported before a generated one: fixing the type comes first.
    CHECK(d[2].kind == DifferenceKind::column_type);
    CHECK(d[2].column == "tag");
    CHECK(d[3].kind == DifferenceKind::required_column);
    CHECK(d[3].column == "sku");
    CHECK_THAT(d[3].message, Contains("DROP NOT NULL"));
    CHECK(d[4].kind == DifferenceKind::missing_table);
    CHECK(d[4].table == "public.items");
    CHECK_THAT(d[4].message, Contains("pg_dump --schema-only --table=public.items"));
    CHECK_THAT(d[4].message, Contains("add \"public.items\" to tables.exclude"));
    // A generated source column is not published: missing on the target is fine.
    for (const auto& x : d)
        CHECK(x.column != "twice");
}

TEST_CASE("a column generated on the target only is reported", "[check][schema]")
{
    std::vector<TableDef> src{table("t", {col("a", "integer"), col("b", "integer")})};
    std::vector<TableDef> dst{table("t", {col("a", "integer"), col("b", "integer", false, false, true)})};
    auto d = compare_schemas(src, dst);
    REQUIRE(d.size() == 1);
    CHECK(d[0].kind == DifferenceKind::generated_column);
    CHECK_THAT(d[0].message, Contains("DROP EXPRESSION"));
    CHECK(std::string(code(d[0].kind)) == "generated_column");
}

TEST_CASE("tables match by schema and name, not by position", "[check][schema]")
{
    std::vector<TableDef> src{table("a", {col("x", "integer")}), table("b", {col("y", "text")})};
    std::vector<TableDef> dst{table("b", {col("y", "text")}), table("a", {col("x", "integer")})};
    CHECK(compare_schemas(src, dst).empty());
    TableDef other = table("a", {col("x", "integer")});
    other.schema = "sales";
    CHECK(compare_schemas(src, {other, dst[0]}).size() == 1); // public.a is missing
}
