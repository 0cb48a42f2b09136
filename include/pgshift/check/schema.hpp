// Compares the source's definition of the selected tables with the target's: tables and
// columns missing on the target, columns of another type, target columns apply cannot fill.
//
// Design notes
// - Used by `pgshift check`, and meant for the initial copy's `schema: verify`: reading
//   (read_table_defs) is separate from comparing (compare_schemas, pure and unit-tested).
// - Columns are matched by name (correctness rule 7), types by format_type() text with the
//   typmod, so numeric(10,2) vs numeric(12,2) and varchar(20) vs text differ. Types outside
//   pg_catalog are always schema-qualified, whatever each role's search_path makes visible.
// - What apply needs, column by column: every non-generated source column exists on the
//   target with the same type and is not generated there (apply writes it); a target column
//   the source lacks is fine unless it is NOT NULL without a default (every INSERT would fail).
//   Generated source columns are not published (pgoutput leaves them out) and are ignored.
#pragma once

#include "pgshift/pg/connection.hpp"
#include "pgshift/reader/catalog.hpp"

#include <string>
#include <vector>

namespace pgshift::check {

struct ColumnDef {
    std::string name;     ///< as in the catalog
    std::string sql_name; ///< quote_ident(name)
    std::string type;     ///< format_type(atttypid, atttypmod)
    bool not_null = false;
    bool has_default = false;
    bool generated = false;
};

struct TableDef {
    std::string schema;
    std::string name;
    std::string sql_name; ///< quote_ident(schema).quote_ident(name), ready for a fix's SQL
    bool exists = false;  ///< an ordinary or partitioned table of that name exists
    std::vector<ColumnDef> columns; ///< in attnum order

    [[nodiscard]] std::string display() const { return schema + "." + name; }
};

enum class DifferenceKind { missing_table, missing_column, column_type, generated_column, required_column };

/// "missing_table", "missing_column", ...
[[nodiscard]] const char* code(DifferenceKind k);

struct SchemaDifference {
    DifferenceKind kind;
    std::string table;   ///< schema.table
    std::string column;  ///< empty for missing_table
    std::string message; ///< one line with the fix
};

/// The definitions of `tables` (schema, name) on `conn`, in the given order; a table that does
/// not exist there comes back with exists = false. Throws pg::PgError.
[[nodiscard]] std::vector<TableDef> read_table_defs(pg::Connection& conn,
                                                    const std::vector<std::pair<std::string, std::string>>& tables);

/// What keeps apply from writing each source table into the target table of the same name.
/// `target` is matched to `source` by schema and name.
[[nodiscard]] std::vector<SchemaDifference> compare_schemas(const std::vector<TableDef>& source,
                                                            const std::vector<TableDef>& target);

/// Reads `tables` on both servers and compares them. Throws pg::PgError.
[[nodiscard]] std::vector<SchemaDifference> compare_schemas(pg::Connection& source, pg::Connection& target,
                                                            const std::vector<reader::SourceTable>& tables);

} // namespace pgshift::check
