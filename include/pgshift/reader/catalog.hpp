// The source's catalog as pgshift sees it: which tables are selected, whether publishing them is
// safe for the source, and what the publication holds.
//
// Design notes
// - "Safe" is a replica-identity rule of PostgreSQL's: once a table is in a publication that
//   publishes UPDATE and DELETE (ours does), the source refuses UPDATE/DELETE on it unless it
//   has a usable replica identity: a primary key (REPLICA IDENTITY DEFAULT), an index named by
//   REPLICA IDENTITY USING INDEX, or REPLICA IDENTITY FULL. For a partitioned table the rule
//   applies to every leaf partition, where the rows live, and (publish_via_partition_root)
//   apply needs the root's identity too. pgshift never publishes a table that would make the
//   source refuse the application's writes (do no harm).
// - Everything here is read-only except prepare_publication/add_to_publication, so the checks
//   run before pgshift's first side effect.
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace pgshift::reader {

/// A selected source table (ordinary or partitioned root).
struct SourceTable {
    std::string schema;
    std::string name;
    /// Empty when publishing the table is safe; else why the source would refuse its
    /// UPDATE/DELETE once published, with the remedies (one line).
    std::string identity_problem;
    int more_problems = 0; ///< further partitions without a usable identity (counted in the message)
    /// The identity problem is one where rows live (the table or a partition): published, the
    /// source refuses the application's UPDATE and DELETE on it.
    bool refuses_writes = false;

    /// schema.table as written in configuration globs and messages (unquoted).
    [[nodiscard]] std::string display() const { return schema + "." + name; }
    /// "schema"."table", ready for SQL.
    [[nodiscard]] std::string sql() const;
};

/// The tables `tables.include` / `tables.exclude` select on the source: ordinary and partitioned
/// tables outside system schemas that belong to no extension (partitions travel with their root),
/// each with its replica identity checked, ordered by name.
[[nodiscard]] std::vector<SourceTable> select_tables(pg::Connection& source, const config::Tables& selection);

/// Something on the source that the selection names, or that the database holds, which the
/// migration will not carry to the target; the operator has to take care of it before cutover.
struct NotCarried {
    std::string code;    ///< unlogged_table | materialized_view | large_objects
    std::string message; ///< one line: what, why, what to do
};

/// What logical replication cannot carry (docs/protocol-notes.md, "Not replicated"): unlogged
/// tables and materialized views that tables.include/exclude match (logical decoding has no
/// changes for them; pgshift selects neither), and large objects (pg_largeobject is a system
/// catalog). Read-only; one entry per kind, naming up to a few objects and the total.
[[nodiscard]] std::vector<NotCarried> not_carried(pg::Connection& source, const config::Tables& selection);

/// Fails with SourceError unless the source's wal_level is logical.
void require_logical_wal(pg::Connection& source);

/// Whether the publication exists on the source. Throws PgError.
[[nodiscard]] bool publication_exists(pg::Connection& source, const std::string& publication);

/// Tables currently in the publication ("schema.table"); empty when it does not exist.
[[nodiscard]] std::set<std::string> published_tables(pg::Connection& source, const std::string& publication);

/// Creates the publication for `tables` or sets its table list to them (publish_via_partition_root).
void prepare_publication(pg::Connection& source, const std::string& publication,
                         const std::vector<SourceTable>& tables);

/// Drops a logical slot once no walsender uses it, waiting up to `wait` for one that just
/// stopped streaming to let go. True when it is gone (or never existed), false when it is still
/// in use after `wait`.
[[nodiscard]] bool drop_slot_when_idle(pg::Connection& conn, const std::string& slot, std::chrono::milliseconds wait);

} // namespace pgshift::reader
