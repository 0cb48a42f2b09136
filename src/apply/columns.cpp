// Columns added on the source while streaming, added on the target (see columns.hpp).
#include "pgshift/apply/columns.hpp"

#include "pgshift/common/errors.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
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

/// The table as the error messages and the log name it, and as SQL.
struct TableName {
    std::string display;
    std::string sql;
};

[[noreturn]] void refuse(const TableName& t, const std::string& column, const std::string& why)
{
    throw TargetError("column \"" + column + "\" of source table " + t.display +
                          " does not exist on the target table, and pgshift cannot add it (schema: copy): " + why +
                          "; add it on the target, then run `pgshift resume`",
                      false);
}

SourceColumn read_source_column(pg::Connection& source, const TableName& t, const NewColumn& wanted)
{
    const auto& name = wanted.name;
    auto r = source.exec_params(
        "SELECT format_type(a.atttypid, a.atttypmod), a.atttypid::int8, a.attnotnull, "
        "  a.attidentity <> '' OR a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), a.atthasmissing, "
        "  t.typcategory = 'A' "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        {t.sql, name});
    if (r.rows() == 0)
        refuse(t, name, "the source table no longer has it (changed again since)");
    SourceColumn c;
    c.name = name;
    c.type = r.str(0, 0);
    c.type_oid = static_cast<std::uint32_t>(std::stoul(r.str(0, 1)));
    c.not_null = r.get(0, 2) == "t";
    c.computed = r.get(0, 3) == "t";
    if (!r.is_null(0, 4))
        c.default_expr = r.str(0, 4);
    c.array = r.get(0, 6) == "t";
    if (wanted.type_oid != 0 && c.type_oid != wanted.type_oid)
        refuse(t, name, "its type on the source is now " + c.type + ", not the one the stream carries (changed again since)");
    c.has_missing = r.get(0, 5) == "t";
    if (c.has_missing && !c.array) {
        // attmissingval is a one-element array of the column's type (anyarray in the catalog).
        auto m = source.exec_params("SELECT ((a.attmissingval::text)::" + c.type +
                                        "[])[1]::text FROM pg_attribute a "
                                        "WHERE a.attrelid = to_regclass($1) AND a.attname = $2",
                                    {t.sql, name});
        if (m.rows() == 1 && !m.is_null(0, 0))
            c.missing = m.str(0, 0);
    }
    return c;
}

/// The table's column names (none when it does not exist). Throws PgError.
std::vector<std::string> column_names(pg::Connection& conn, const std::string& qualified)
{
    auto r = conn.exec_params("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
                              "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                              {qualified});
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(r.str(i, 0));
    return out;
}

} // namespace

std::vector<std::string> missing_columns(pg::Connection& target, const std::string& qualified,
                                         const std::vector<std::string>& names)
{
    const auto present = column_names(target, qualified);
    if (present.empty())
        return {}; // no such table (or one without columns): reported elsewhere
    std::vector<std::string> missing;
    for (const auto& n : names)
        if (std::find(present.begin(), present.end(), n) == present.end())
            missing.push_back(n);
    return missing;
}

std::vector<std::string> extra_columns(pg::Connection& target, const std::string& qualified,
                                       const std::vector<std::string>& names)
{
    std::vector<std::string> extra;
    for (auto& n : column_names(target, qualified))
        if (std::find(names.begin(), names.end(), n) == names.end())
            extra.push_back(std::move(n));
    return extra;
}

std::vector<std::string> dropped_not_null(pg::Connection& target, const std::string& qualified,
                                          const std::vector<std::string>& names)
{
    auto r = target.exec_params("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 "
                                "AND NOT attisdropped AND attnotnull AND NOT atthasdef AND attgenerated = '' "
                                "AND attidentity = '' AND NOT attname = ANY ($2::text[]) ORDER BY attnum",
                                {qualified, pg::text_array(names)});
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(r.str(i, 0));
    return out;
}

namespace {

// Built-in type OIDs (the same on every server).
constexpr std::uint32_t k_int2 = 21, k_int4 = 23, k_int8 = 20, k_float4 = 700, k_float8 = 701, k_numeric = 1700,
                        k_text = 25, k_varchar = 1043, k_bpchar = 1042;
constexpr std::int32_t k_varhdrsz = 4;

/// Decimal digits an integer type's values need.
int integer_digits(std::uint32_t oid)
{
    return oid == k_int2 ? 5 : oid == k_int4 ? 10 : 19;
}

} // namespace

bool widens(std::uint32_t from_oid, std::int32_t from_mod, std::uint32_t to_oid, std::int32_t to_mod)
{
    const bool integer = from_oid == k_int2 || from_oid == k_int4 || from_oid == k_int8;
    if (integer) {
        if (to_oid == k_int4 || to_oid == k_int8)
            return integer_digits(to_oid) > integer_digits(from_oid);
        if (to_oid != k_numeric)
            return false;
        if (to_mod < 0)
            return true;
        const int precision = ((to_mod - k_varhdrsz) >> 16) & 0xffff, scale = (to_mod - k_varhdrsz) & 0x7ff;
        return precision - scale >= integer_digits(from_oid);
    }
    if (from_oid == k_float4)
        return to_oid == k_float8;
    if (from_oid == k_numeric && to_oid == k_numeric) {
        if (to_mod < 0)
            return from_mod >= 0;
        if (from_mod < 0)
            return false;
        const int from_scale = (from_mod - k_varhdrsz) & 0x7ff, to_scale = (to_mod - k_varhdrsz) & 0x7ff;
        return from_scale == to_scale && to_mod > from_mod;
    }
    if (from_oid == k_varchar && to_oid == k_text)
        return true;
    if (from_oid == k_text && to_oid == k_varchar)
        return to_mod < 0; // varchar without a length is text by another name
    if ((from_oid == k_varchar || from_oid == k_bpchar) && to_oid == from_oid)
        return from_mod >= 0 && (to_mod < 0 || to_mod > from_mod);
    return false;
}

std::vector<WidenedColumn> widened_columns(pg::Connection& target, const std::string& qualified,
                                           const std::vector<StreamColumn>& columns)
{
    auto r = target.exec_params("SELECT attname, atttypid::int8, atttypmod FROM pg_attribute "
                                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                                {qualified});
    std::vector<WidenedColumn> out;
    for (int i = 0; i < r.rows(); ++i) {
        const auto name = r.str(i, 0);
        auto c = std::find_if(columns.begin(), columns.end(), [&](const auto& x) { return x.name == name; });
        if (c == columns.end())
            continue;
        const auto oid = static_cast<std::uint32_t>(std::stoul(r.str(i, 1)));
        const auto mod = std::stoi(r.str(i, 2));
        if ((oid == c->type_oid && mod == c->typmod) || !widens(oid, mod, c->type_oid, c->typmod))
            continue;
        auto names = target.exec_params("SELECT format_type($1::oid, $2::int), format_type($3::oid, $4::int)",
                                        {r.str(i, 1), r.str(i, 2), std::to_string(c->type_oid), std::to_string(c->typmod)});
        out.push_back({name, names.str(0, 0), names.str(0, 1)});
    }
    return out;
}

void widen_columns(pg::Connection& target, const std::string& display, const std::string& qualified,
                   const std::vector<WidenedColumn>& columns)
{
    std::string statement = "ALTER TABLE " + qualified;
    for (std::size_t i = 0; i < columns.size(); ++i)
        statement += std::string(i ? "," : "") + " ALTER COLUMN " + pg::quote_ident(columns[i].name) + " TYPE " +
                     columns[i].to;
    for (const auto& c : columns)
        spdlog::info("column {} of {} is {} on the target and {} on the source (widened there): changing it on the "
                     "target (schema: copy; the table is rewritten, apply waits for it)",
                     c.name, display, c.from, c.to);
    const auto started = std::chrono::steady_clock::now();
    try {
        target.exec(statement);
    } catch (const pg::PgError& e) {
        if (e.broken())
            throw TargetError("changing column types of " + display + " on the target: " + e.what(), true);
        spdlog::warn("could not change the column type(s) of {} on the target: {}; values apply as text until one "
                     "does not fit; change it there: {}",
                     display, e.what(), statement);
        return;
    }
    spdlog::info("column type(s) of {} changed on the target in {:.1f} s", display,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void relax_dropped_columns(pg::Connection& target, const std::string& display, const std::string& qualified,
                           const std::vector<std::string>& columns)
{
    std::string statements;
    for (const auto& c : columns)
        statements += "ALTER TABLE " + qualified + " ALTER COLUMN " + pg::quote_ident(c) + " DROP NOT NULL;\n";
    try {
        target.exec(statements);
    } catch (const pg::PgError& e) {
        throw TargetError("could not make the target column(s) of " + display + " that the source no longer has "
                              "nullable (schema: copy): " + e.what() +
                              "; run ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL (or drop the column) on the "
                              "target, then `pgshift resume`",
                          e.retryable());
    }
    for (const auto& c : columns)
        spdlog::warn("column {} of target table {} is NOT NULL without a default, and the source's table no longer has "
                     "it (dropped there?): made it nullable on the target, where it keeps its values, so that new "
                     "rows apply (schema: copy)",
                     c, display);
}

void add_columns(pg::Connection& source, pg::Connection& target, const std::string& schema, const std::string& table,
                 const std::vector<NewColumn>& columns, bool rows_before, bool others_dropped)
{
    const TableName t{schema + "." + table, pg::quote_ident(schema) + "." + pg::quote_ident(table)};
    std::vector<SourceColumn> defs;
    std::vector<std::string> source_names;
    try {
        // format_type() and pg_get_expr() then qualify every name outside pg_catalog, and a
        // missing value prints in a form any server reads back the same (an ISO date, not a
        // "SQL, DMY" one; every float digit).
        source.exec("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false), "
                    "pg_catalog.set_config('datestyle', 'ISO', false), "
                    "pg_catalog.set_config('intervalstyle', 'postgres', false), "
                    "pg_catalog.set_config('extra_float_digits', '3', false)");
        for (const auto& c : columns)
            defs.push_back(read_source_column(source, t, c));
        source.exec("RESET search_path; RESET datestyle; RESET intervalstyle; RESET extra_float_digits");
        source_names = column_names(source, t.sql);
    } catch (const pg::PgError& e) {
        throw TargetError("could not read the definition of the column(s) source table " + t.display +
                              " has and the target lacks: " + e.what(),
                          e.retryable());
    }
    std::string statements;
    try {
        std::string extra_on_target;
        for (const auto& n : column_names(target, t.sql))
            if (std::find(source_names.begin(), source_names.end(), n) == source_names.end())
                extra_on_target += (extra_on_target.empty() ? "" : ", ") + n;
        const bool target_rows = rows_before || target.exec("SELECT EXISTS (SELECT 1 FROM " + t.sql + ")").get(0, 0) == "t";
        // A column renamed on the source looks like a new one, and its existing rows' values
        // would be lost on the target: with rows there, a target column the source no longer
        // has makes every new column ambiguous.
        if (target_rows && !extra_on_target.empty() && !defs.empty() && !others_dropped)
            refuse(t, defs.front().name,
                   "the target table also has column(s) " + extra_on_target +
                       " that the source's no longer has, so this may be a renamed column (pgshift cannot tell): "
                       "rename it on the target (ALTER TABLE " + t.sql + " RENAME COLUMN ...), or drop the old "
                       "one if the source dropped it");
        for (const auto& c : defs) {
            if (c.computed)
                refuse(t, c.name, "it is an identity or generated column, whose definition pgshift does not copy");
            // Rows older than the ALTER read NULL or the missing value on the source; anything
            // else they hold came from a rewrite the stream does not carry.
            if (target_rows && c.has_missing && !c.missing)
                refuse(t, c.name, "it is an array column added with a default, whose value for the rows the "
                                    "table already held pgshift does not carry");
            if (target_rows && !c.has_missing && (c.default_expr || c.not_null))
                refuse(t, c.name, "it was added with a default PostgreSQL computed for each existing row (or "
                                    "given its default or NOT NULL later), and those values are not in the "
                                    "replication stream");
            const auto column = pg::quote_ident(c.name);
            const auto alter = "ALTER TABLE " + t.sql + " ALTER COLUMN " + column;
            statements += "ALTER TABLE " + t.sql + " ADD COLUMN " + column + " " + c.type +
                          (c.missing ? " DEFAULT " + target.quote_literal(*c.missing) : "") + ";\n";
            if (c.default_expr)
                statements += alter + " SET DEFAULT " + *c.default_expr + ";\n";
            else if (c.missing)
                statements += alter + " DROP DEFAULT;\n";
            if (c.not_null)
                statements += alter + " SET NOT NULL;\n";
        }
        // One simple-query string: one implicit transaction, all columns or none.
        target.exec(statements);
    } catch (const pg::PgError& e) {
        std::string list;
        for (const auto& c : columns)
            list += (list.empty() ? "\"" : ", \"") + c.name + "\"";
        throw TargetError("could not add column(s) " + list + " of source table " + t.display +
                              " to the target table (schema: copy): " + e.what() +
                              "; add them on the target, then run `pgshift resume`",
                          e.retryable());
    }
    for (const auto& c : defs)
        spdlog::info("column {} ({}) of source table {} was missing on the target: added it (schema: copy)", c.name,
                     c.type, t.display);
    spdlog::debug("added on the target: {}", statements);
}

} // namespace pgshift::apply
