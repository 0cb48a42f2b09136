// `schema: verify` and `schema: copy` for the initial copy: the target tables must match the
// source's, or are created from the source's definition (pg_dump --schema-only as a basis).
//
// Design notes
// - verify: every selected table exists on the target with every source column, of the same
//   type (check::compare_schemas, which `pgshift check` uses too); every difference is
//   reported at once and nothing starts.
// - copy: what the selected tables need and the target lacks is created in two steps, like
//   pg_restore: before the data, schemas, extensions, types (enums, domains, composites,
//   ranges), sequences, functions and the tables themselves (partitions attached); after the
//   data, primary keys, unique and other indexes, constraints, triggers (loading rows into a
//   table without indexes and building them once is much faster than maintaining them).
// - The definitions come from the local pg_dump (custom format, schema only) and pg_restore's
//   table of contents, filtered by catalog OIDs: the selected tables, their partitions, and
//   recursively the objects they depend on (pg_depend), minus what the target already has
//   (by name). pg_dump must be at least the source's major version: an older one cannot read
//   a newer server, and that is said before anything is created. PGSHIFT_PG_DUMP names a
//   pg_dump binary explicitly (pg_restore is taken from the same directory).
// - The schema is dumped once per run and serves both steps (an index added on the source
//   during the copy is not picked up, as with pg_dump | psql); existence probes on the target
//   go out as one query.
// - Existing tables are never altered: with schema: copy a table that exists but differs is
//   reported like with verify.
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/reader/catalog.hpp"

#include <memory>
#include <string>
#include <vector>

namespace pgshift::copy {

/// Read-only: the problems that keep the copy from starting, one line each (naming table and
/// column, with the fix); empty when it may start.
[[nodiscard]] std::vector<std::string> check_schema(const config::Config& cfg, pg::Connection& source,
                                                    pg::Connection& target,
                                                    const std::vector<reader::SourceTable>& tables);

/// schema: copy for one run: the source's schema is dumped once (pg_dump --schema-only, on
/// first need) and both steps restore from that dump, as `pg_dump | psql` does with its one
/// dump. A restart dumps again. With schema: verify both steps do nothing.
class SchemaCopy {
public:
    explicit SchemaCopy(const config::Config& cfg);
    ~SchemaCopy();
    SchemaCopy(const SchemaCopy&) = delete;
    SchemaCopy& operator=(const SchemaCopy&) = delete;

    /// Before the rows: creates what the selected tables need and the target lacks, without
    /// indexes and constraints. Throws TargetError/SourceError.
    void before_data(pg::Connection& source, pg::Connection& target, const std::vector<reader::SourceTable>& tables);
    /// After the rows: the indexes, constraints and triggers of the selected tables that the
    /// target lacks. Idempotent (a restart runs it again).
    void after_data(pg::Connection& source, pg::Connection& target, const std::vector<reader::SourceTable>& tables);

    struct Dump; ///< the dump file and its table of contents (schema_copy.cpp)

private:
    /// Adds the columns existing target tables lack (schema: copy). Throws TargetError.
    void add_missing_columns(pg::Connection& source, pg::Connection& target,
                             const std::vector<reader::SourceTable>& tables);
    /// Restores the entries of `section` (pre-data | post-data) that `tables` need and the
    /// target lacks, in one target transaction. Returns how many.
    int restore_section(pg::Connection& source, pg::Connection& target,
                        const std::vector<reader::SourceTable>& tables, const std::string& section);

    const config::Config& cfg_;
    std::unique_ptr<Dump> dump_;
};

} // namespace pgshift::copy
