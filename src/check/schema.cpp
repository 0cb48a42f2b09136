// Reading table definitions from the catalog and comparing source with target, column by column.
#include "pgshift/check/schema.hpp"

#include <map>

namespace pgshift::check {

const char* code(DifferenceKind k)
{
    switch (k) {
    case DifferenceKind::missing_table: return "missing_table";
    case DifferenceKind::missing_column: return "missing_column";
    case DifferenceKind::column_type: return "column_type";
    case DifferenceKind::generated_column: return "generated_column";
    case DifferenceKind::required_column: return "required_column";
    }
    return "schema";
}

std::vector<TableDef> read_table_defs(pg::Connection& conn,
                                      const std::vector<std::pair<std::string, std::string>>& tables)
{
    std::vector<std::string> schemas, names;
    for (const auto& [s, n] : tables) {
        schemas.push_back(s);
        names.push_back(n);
    }
    // One row per column (or one row with NULL columns for a missing or empty table), in the
    // order asked, then attnum.
    // format_type() qualifies a type only when its schema is not on the search_path, which may
    // differ between the two roles: types outside pg_catalog are always qualified here (an
    // array by its element type's schema), so the text depends on the catalog alone.
    auto r = conn.exec_params(
        "SELECT t.ord, quote_ident(t.s) || '.' || quote_ident(t.r), c.oid IS NOT NULL, a.attname, "
        "       quote_ident(a.attname), "
        "       CASE WHEN tn.nspname IS NULL OR tn.nspname = 'pg_catalog' "
        "                 OR starts_with(f.type, quote_ident(tn.nspname) || '.') THEN f.type "
        "            ELSE quote_ident(tn.nspname) || '.' || f.type END, "
        "       a.attnotnull, a.atthasdef, a.attgenerated <> '' "
        "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, r, ord) "
        "LEFT JOIN pg_namespace n ON n.nspname = t.s "
        "LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r AND c.relkind IN ('r', 'p') "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_type ty ON ty.oid = a.atttypid "
        "LEFT JOIN pg_type et ON et.oid = CASE WHEN ty.typcategory = 'A' THEN ty.typelem ELSE ty.oid END "
        "LEFT JOIN pg_namespace tn ON tn.oid = et.typnamespace "
        "LEFT JOIN LATERAL (SELECT format_type(a.atttypid, a.atttypmod) AS type) f ON true "
        "ORDER BY t.ord, a.attnum",
        {pg::text_array(schemas), pg::text_array(names)});
    std::vector<TableDef> out;
    out.reserve(tables.size());
    for (const auto& [s, n] : tables)
        out.push_back({s, n, "", false, {}});
    for (int i = 0; i < r.rows(); ++i) {
        auto ord = std::stoul(r.str(i, 0));
        if (ord < 1 || ord > out.size())
            throw InternalError("read_table_defs: row for table " + std::to_string(ord) + " of " +
                                std::to_string(out.size()));
        auto& t = out[ord - 1];
        t.sql_name = r.str(i, 1);
        t.exists = r.get(i, 2) == "t";
        if (r.is_null(i, 3))
            continue;
        t.columns.push_back({r.str(i, 3), r.str(i, 4), r.str(i, 5), r.get(i, 6) == "t", r.get(i, 7) == "t",
                             r.get(i, 8) == "t"});
    }
    return out;
}

std::vector<SchemaDifference> compare_schemas(const std::vector<TableDef>& source, const std::vector<TableDef>& target)
{
    std::map<std::pair<std::string, std::string>, const TableDef*> by_name;
    for (const auto& t : target)
        by_name[{t.schema, t.name}] = &t;
    std::vector<SchemaDifference> out;
    for (const auto& src : source) {
        auto it = by_name.find({src.schema, src.name});
        const TableDef* dst = it == by_name.end() ? nullptr : it->second;
        auto table = src.display();
        const auto& sql = src.sql_name.empty() ? table : src.sql_name;
        if (!dst || !dst->exists) {
            out.push_back({DifferenceKind::missing_table, table, "",
                           "table " + table + " does not exist on the target: create it from the source's "
                           "definition (pg_dump --schema-only --table=" + sql + " <source> | psql <target>), "
                           "or add \"" + table + "\" to tables.exclude"});
            continue;
        }
        std::map<std::string, const ColumnDef*> dst_columns;
        for (const auto& c : dst->columns)
            dst_columns[c.name] = &c;
        std::map<std::string, bool> src_columns;
        for (const auto& c : src.columns) {
            src_columns[c.name] = true;
            if (c.generated)
                continue; // not published: the target computes it (or stores NULL)
            auto d = dst_columns.find(c.name);
            auto where = "table " + table + ", column " + c.name;
            if (d == dst_columns.end()) {
                out.push_back({DifferenceKind::missing_column, table, c.name,
                               where + " (" + c.type + ") is missing on the target, so apply cannot write it: "
                               "ALTER TABLE " + sql + " ADD COLUMN " + c.sql_name + " " + c.type + " on the target"});
            } else if (d->second->type != c.type) {
                out.push_back({DifferenceKind::column_type, table, c.name,
                               where + " is " + c.type + " on the source but " + d->second->type +
                               " on the target: ALTER TABLE " + sql + " ALTER COLUMN " + c.sql_name + " TYPE " +
                               c.type + " on the target"});
            } else if (d->second->generated) {
                out.push_back({DifferenceKind::generated_column, table, c.name,
                               where + " is generated on the target but stored on the source, and apply writes "
                               "it: ALTER TABLE " + sql + " ALTER COLUMN " + c.sql_name +
                               " DROP EXPRESSION on the target"});
            }
        }
        for (const auto& c : dst->columns)
            if (!src_columns.count(c.name) && c.not_null && !c.has_default && !c.generated)
                out.push_back({DifferenceKind::required_column, table, c.name,
                               "table " + table + ", column " + c.name + " exists only on the target and is NOT "
                               "NULL without a default, so every replicated INSERT would fail: ALTER TABLE " + sql +
                               " ALTER COLUMN " + c.sql_name + " DROP NOT NULL (or SET DEFAULT ...) on the target"});
    }
    return out;
}

std::vector<SchemaDifference> compare_schemas(pg::Connection& source, pg::Connection& target,
                                              const std::vector<reader::SourceTable>& tables)
{
    std::vector<std::pair<std::string, std::string>> names;
    for (const auto& t : tables)
        names.emplace_back(t.schema, t.name);
    return compare_schemas(read_table_defs(source, names), read_table_defs(target, names));
}

} // namespace pgshift::check
