// Columns the source has and the target table lacks, added on the target (`schema: copy`).
//
// Design notes
// - Two callers. Apply: logical decoding carries no DDL, but every Relation message lists the
//   table's columns as the source had them at that point of the stream, so a column the target
//   lacks was added on the source (ALTER TABLE ... ADD COLUMN) while pgshift streamed; in both
//   directions, so that a deploy on the new primary after a cutover does not stop the rollback
//   stream. The initial copy: target tables that exist but lack columns (created from an older
//   dump) get them before their rows are copied.
// - The column's definition comes from the source's catalog: its type, its default expression,
//   NOT NULL. Where the stream names a type, the source's column must still have it (else the
//   source changed again since, and nothing is guessed).
// - Rows that existed before the ALTER: on the source they read the column's "missing value"
//   (a non-volatile default, evaluated once by the ALTER) or NULL; these are never in the
//   stream. The column is added on the target with that value as its default, which PostgreSQL
//   stores as the target's own missing value, and then given the source's default for new
//   rows. A volatile default made the source rewrite the table, and a rewrite is not decoded:
//   the existing rows' values cannot be known. If the target table holds rows then, the column
//   is refused with the reason, and apply stops as for any schema difference (state `failed`,
//   the slot keeps everything). Identity and generated columns are always refused: their
//   definition is more than a type and a default.
// - A column renamed on the source arrives as a new name, and adding it would leave its existing
//   rows without their values. Apply follows the renames its records prove (table_names.hpp);
//   otherwise a rename leaves the old name on the target, so when the target table holds rows
//   and has a column the source's no longer has (and the records do not prove it dropped), the
//   new column is refused (rename it on the target).
// - Timing is apply's part: it adds the columns only once every earlier transaction has
//   committed on the target, so the target table then holds exactly the rows the source table
//   held before the transaction that first uses the new definition.
// - All of a table's new columns are added in one target transaction, or none.
// - A column dropped on the source stays on the target with its values; when it is NOT NULL
//   without a default there, every replicated INSERT would fail, so it is made nullable (one
//   target transaction, at the same point as an added column).
// - A column whose type the source widened (ALTER COLUMN ... TYPE bigint before the ids run
//   out) is changed on the target likewise, at the same point: apply would stop at the first
//   value the old type cannot hold, and after a cutover the application's writes would fail.
//   Only conversions that keep every value exactly and do not depend on a session setting or a
//   USING expression (which the stream does not carry) are made: smallint/integer to a wider
//   integer or a numeric that holds it, real to double precision, varchar(n)/char(n)/numeric(p,s)
//   to a longer (or unbounded) one of the same kind, varchar to text and back. Any other change
//   of a built-in type is named in a warning with the statement (relations.cpp). A change that
//   the target refuses (a view uses the column, ...) is a warning too: values apply as text,
//   as before the change was seen.
#pragma once

#include "pgshift/pg/connection.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pgshift::apply {

/// A column to add, as the caller knows it.
struct NewColumn {
    std::string name;
    std::uint32_t type_oid = 0; ///< the type the replication stream carries; 0: not checked
};

/// The columns of `names` (a source table's, in order) that the target table `qualified` lacks.
/// Empty when it lacks none, or when the table itself does not exist (whoever needs it reports
/// that). Throws PgError.
[[nodiscard]] std::vector<std::string> missing_columns(pg::Connection& target, const std::string& qualified,
                                                       const std::vector<std::string>& names);

/// The columns of the target table `qualified` that `names` (the source table's, in its latest
/// Relation message) lacks: dropped or renamed on the source. Throws PgError.
[[nodiscard]] std::vector<std::string> extra_columns(pg::Connection& target, const std::string& qualified,
                                                     const std::vector<std::string>& names);

/// The columns of the target table `qualified` that `names` (the source table's, from its latest
/// Relation message) lacks and that are NOT NULL without a default, neither generated nor
/// identity: a column dropped on the source, which every replicated INSERT would leave NULL.
/// Throws PgError.
[[nodiscard]] std::vector<std::string> dropped_not_null(pg::Connection& target, const std::string& qualified,
                                                        const std::vector<std::string>& names);

/// Makes `columns` of the target table `qualified` nullable, in one transaction, and logs each:
/// the column stays with its values (pgshift never drops data), and rows the source writes from
/// now on leave it NULL. Throws TargetError.
void relax_dropped_columns(pg::Connection& target, const std::string& display, const std::string& qualified,
                           const std::vector<std::string>& columns);

/// A column as the source's latest Relation message carries it.
struct StreamColumn {
    std::string name;
    std::uint32_t type_oid = 0;
    std::int32_t typmod = -1;
};

/// Whether a column of built-in type `from` (OID, typmod) can become `to` keeping every value
/// exactly and the same whatever the session (the conversions listed above).
[[nodiscard]] bool widens(std::uint32_t from_oid, std::int32_t from_mod, std::uint32_t to_oid, std::int32_t to_mod);

/// A column of the target table to change to the source's wider type.
struct WidenedColumn {
    std::string name;
    std::string from, to; ///< format_type() on the target: "integer", "bigint"
};

/// The columns of the target table `qualified` whose type `columns` (the source table's)
/// carries widened (widens()). Throws PgError.
[[nodiscard]] std::vector<WidenedColumn> widened_columns(pg::Connection& target, const std::string& qualified,
                                                         const std::vector<StreamColumn>& columns);

/// Changes `columns` of the target table `qualified` to their wider types in one statement (one
/// rewrite, under the table's ACCESS EXCLUSIVE lock, as on the source), and logs each. A
/// refusal from the server is logged as a warning, with the statement, and apply goes on; a
/// lost connection throws TargetError (retryable).
void widen_columns(pg::Connection& target, const std::string& display, const std::string& qualified,
                   const std::vector<WidenedColumn>& columns);

/// Adds `columns` of the source table `schema`.`table` to the target table of that name,
/// defined as on the source. `rows_before`: the target table will hold rows that the source
/// table held before the ALTER even if it holds none now (a source transaction changed the table
/// before it used the new definition). Uses `source` for its catalog (its search_path is set to
/// pg_catalog meanwhile, then reset) and `target` for one transaction. `others_dropped`: the
/// caller knows that every column the target table has and the source's lacks was dropped
/// there (none of them can be one of `columns` renamed). Throws TargetError (not retryable,
/// unless a connection failed) naming the table and column when it cannot be done faithfully or
/// a server refuses.
void add_columns(pg::Connection& source, pg::Connection& target, const std::string& schema, const std::string& table,
                 const std::vector<NewColumn>& columns, bool rows_before, bool others_dropped = false);

} // namespace pgshift::apply
