// Columns added on the source while pgshift streams, added on the target as well.
//
// Design notes
// - Logical decoding carries no DDL, but every Relation message lists the table's columns as
//   the source had them at that point of the stream. A column the target table lacks was added
//   on the source (ALTER TABLE ... ADD COLUMN). When pgshift manages the target's schema
//   (`schema: copy` with the initial copy, as for tables created while streaming), it adds the
//   column there too instead of stopping apply until an operator does.
// - The column's definition comes from the source's catalog (a short connection): its type, its
//   default expression, NOT NULL. The type must be the one the Relation message names (else the
//   source changed again since, and nothing is guessed).
// - Rows that existed before the ALTER: on the source they read the column's "missing value"
//   (a non-volatile default, evaluated once by the ALTER) or NULL; these are never in the
//   stream. The column is added on the target with that value as its default, which PostgreSQL
//   stores as the target's own missing value, and then given the source's default for new
//   rows. A volatile default (or an identity or generated column) made the source rewrite the
//   table, and a rewrite is not decoded: the existing rows' values cannot be known. If the
//   target table holds rows then, the column is refused with the reason, and apply stops as
//   for any schema difference (state `failed`, the slot keeps everything).
// - Timing is the engine's part: it adds the columns only once every earlier transaction has
//   committed on the target, so the target table then holds exactly the rows the source table
//   held before the transaction that first uses the new definition.
// - All of a table's new columns are added in one target transaction, or none.
#pragma once

#include "pgshift/pg/connection.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <string>
#include <vector>

namespace pgshift::apply {

/// The columns of `rel` the target table lacks, by name. Empty when it lacks none, or when the
/// table itself does not exist (relation resolution reports that). Throws PgError.
[[nodiscard]] std::vector<std::string> missing_columns(pg::Connection& catalog, const protocol::Relation& rel);

/// Adds `names` (columns of `rel`) to the target table, defined as on the source, through
/// `catalog` (a target session whose search_path is pg_catalog). `rows_before`: this source
/// transaction changed the table before it used the new definition (those rows are not on the
/// target yet, but the source table held them at the ALTER). Throws TargetError (not
/// retryable) naming the table and column when it cannot be done faithfully or a server
/// refuses.
void add_columns(const std::string& source_conninfo, pg::Connection& catalog, const protocol::Relation& rel,
                 const std::vector<std::string>& names, bool rows_before);

} // namespace pgshift::apply
