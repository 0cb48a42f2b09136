// Columns added on the source while streaming, added on the target (see columns.hpp).
#include "pgshift/apply/columns.hpp"

#include "pgshift/common/errors.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

namespace pgshift::apply {

namespace {

/// A column as the source defines it now.
struct SourceColumn {
    std::string name;
    std::string type;                  ///< format_type(), qualified outside pg_catalog
    std::uint32_t type_oid = 0;
    bool not_null = false;
    bool computed = false;             ///< identity or generated: values the stream never carried
    std::optional<std::string> default_expr;
    bool has_missing = false;           ///< rows older than the ALTER read a value, not NULL
    std::optional<std::string> missing; ///< that value as text (not carried for arrays)
    bool array = false;
};

std::string qualified_name(const protocol::Relation& rel)
{
    const std::string nsp = rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname);
    return pg::quote_ident(nsp) + "." + pg::quote_ident(rel.relname);
}

std::string display_name(const protocol::Relation& rel)
{
    return (rel.nspname.empty() ? std::string("pg_catalog") : std::string(rel.nspname)) + "." +
           std::string(rel.relname);
}

[[noreturn]] void refuse(const protocol::Relation& rel, const std::string& column, const std::string& why)
{
    throw TargetError("column \"" + column + "\" of source table " + display_name(rel) +
                          " does not exist on the target table, and pgshift cannot add it (schema: copy): " + why +
                          "; add it on the target, then run `pgshift resume`",
                      false);
}

SourceColumn read_source_column(pg::Connection& source, const protocol::Relation& rel, const std::string& name)
{
    const auto table = qualified_name(rel);
    auto r = source.exec_params(
        "SELECT format_type(a.atttypid, a.atttypmod), a.atttypid::int8, a.attnotnull, "
        "  a.attidentity <> '' OR a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), a.atthasmissing, "
        "  t.typcategory = 'A' "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        {table, name});
    const auto stream_type = std::find_if(rel.columns.begin(), rel.columns.end(),
                                          [&](const protocol::RelationColumn& c) { return c.name == name; })
                                 ->type_oid;
    if (r.rows() == 0)
        refuse(rel, name, "the source table no longer has it (changed again since)");
    SourceColumn c;
    c.name = name;
    c.type = r.str(0, 0);
    c.type_oid = static_cast<std::uint32_t>(std::stoul(r.str(0, 1)));
    c.not_null = r.get(0, 2) == "t";
    c.computed = r.get(0, 3) == "t";
    if (!r.is_null(0, 4))
        c.default_expr = r.str(0, 4);
    c.array = r.get(0, 6) == "t";
    if (c.type_oid != stream_type)
        refuse(rel, name, "its type on the source is now " + c.type + ", not the one the stream carries (changed again since)");
    c.has_missing = r.get(0, 5) == "t";
    if (c.has_missing && !c.array) {
        // attmissingval is a one-element array of the column's type (anyarray in the catalog).
        auto m = source.exec_params("SELECT ((a.attmissingval::text)::" + c.type +
                                        "[])[1]::text FROM pg_attribute a "
                                        "WHERE a.attrelid = to_regclass($1) AND a.attname = $2",
                                    {table, name});
        if (m.rows() == 1 && !m.is_null(0, 0))
            c.missing = m.str(0, 0);
    }
    return c;
}

} // namespace

std::vector<std::string> missing_columns(pg::Connection& catalog, const protocol::Relation& rel)
{
    auto r = catalog.exec_params("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
                                 "AND a.attnum > 0 AND NOT a.attisdropped",
                                 {qualified_name(rel)});
    if (r.rows() == 0)
        return {}; // no such table (or one without columns): resolution reports it
    std::vector<std::string> present;
    for (int i = 0; i < r.rows(); ++i)
        present.push_back(r.str(i, 0));
    std::vector<std::string> missing;
    for (const auto& c : rel.columns)
        if (std::find(present.begin(), present.end(), c.name) == present.end())
            missing.emplace_back(c.name);
    return missing;
}

void add_columns(const std::string& source_conninfo, pg::Connection& catalog, const protocol::Relation& rel,
                 const std::vector<std::string>& names, bool rows_before)
{
    const auto table = qualified_name(rel);
    std::vector<SourceColumn> columns;
    try {
        pg::Connection source(source_conninfo);
        // format_type() and pg_get_expr() then qualify every name outside pg_catalog, as the
        // target's catalog session (search_path pg_catalog) needs them.
        source.exec("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)");
        for (const auto& name : names)
            columns.push_back(read_source_column(source, rel, name));
    } catch (const pg::PgError& e) {
        throw TargetError("could not read the definition of the column(s) " + display_name(rel) +
                              " gained on the source: " + e.what(),
                          e.retryable());
    }
    std::string statements;
    try {
        const bool target_rows = rows_before || catalog.exec("SELECT EXISTS (SELECT 1 FROM " + table + ")").get(0, 0) == "t";
        for (const auto& c : columns) {
            // Rows older than the ALTER read NULL or the missing value on the source; anything
            // else they hold came from a rewrite the stream does not carry.
            if (target_rows && c.computed)
                refuse(rel, c.name, "it is an identity or generated column, whose values for the rows the table "
                                    "already held were written by a table rewrite that logical replication does not carry");
            if (target_rows && c.has_missing && !c.missing)
                refuse(rel, c.name, "it is an array column added with a default, whose value for the rows the "
                                    "table already held pgshift does not carry");
            if (target_rows && !c.has_missing && (c.default_expr || c.not_null))
                refuse(rel, c.name, "it was added with a default PostgreSQL computed for each existing row (or "
                                    "given its default or NOT NULL later), and those values are not in the "
                                    "replication stream");
            const auto col = table + " ADD COLUMN " + pg::quote_ident(c.name) + " " + c.type;
            statements += "ALTER TABLE " + col + (c.missing ? " DEFAULT " + catalog.quote_literal(*c.missing) : "") + ";\n";
            if (c.default_expr)
                statements += "ALTER TABLE " + table + " ALTER COLUMN " + pg::quote_ident(c.name) + " SET DEFAULT " +
                              *c.default_expr + ";\n";
            else if (c.missing)
                statements += "ALTER TABLE " + table + " ALTER COLUMN " + pg::quote_ident(c.name) + " DROP DEFAULT;\n";
            if (c.not_null)
                statements += "ALTER TABLE " + table + " ALTER COLUMN " + pg::quote_ident(c.name) + " SET NOT NULL;\n";
        }
        // One simple-query string: one implicit transaction, all columns or none.
        catalog.exec(statements);
    } catch (const pg::PgError& e) {
        std::string list;
        for (const auto& n : names)
            list += (list.empty() ? "\"" : ", \"") + n + "\"";
        throw TargetError("could not add column(s) " + list + " of source table " + display_name(rel) +
                              " to the target table (schema: copy): " + e.what() +
                              "; add them on the target, then run `pgshift resume`",
                          e.retryable());
    }
    for (const auto& c : columns)
        spdlog::info("column {} ({}) appeared on source table {}: added it on the target (schema: copy)", c.name,
                     c.type, display_name(rel));
    spdlog::debug("added on the target: {}", statements);
}

} // namespace pgshift::apply
