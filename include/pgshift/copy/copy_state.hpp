// The initial copy's state, persisted on the target in the `pgshift` schema, so that a restart
// knows whether the target holds a complete copy, and which tables an interrupted one filled.
//
// Design notes
// - One row per migration in pgshift.copy_runs (state copying | indexing | done, the slot, its
//   consistent point, how many attempts), one row per selected table in pgshift.copy_tables
//   (pending | done, rows, bytes). Written only by the main thread of a session.
// - The run row is written *before* the slot is created: a crash at any point after the slot
//   exists finds a run that is not done, so a half-copied target is never streamed into.
// - `done` is written with synchronous_commit on, after every copy session committed: its
//   commit record flushes the WAL of every earlier (asynchronous) copy commit, so `done` on
//   disk implies every copied row on disk.
// - An interrupted copy cannot continue under its snapshot (an exported snapshot lives only
//   as long as the walsender session that exported it, and pgshift's died with it). Tables
//   that were done are kept: each records the LSN of the snapshot it was copied under
//   (sync_lsn); the others are emptied and copied under a new snapshot, and the reader drops
//   their changes that committed below it (reader.hpp). When the slot or its consistent point
//   is gone, everything is emptied and copied again from a new slot (run.cpp says which).
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/pg/connection.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pgshift::copy {

/// What the target says about a migration's initial copy.
struct CopyRun {
    bool exists = false;       ///< a row in pgshift.copy_runs
    std::string state;         ///< copying | indexing | done
    std::string slot;          ///< the slot whose snapshot the copy used
    Lsn consistent_point;      ///< zero until the slot was created
    int attempts = 0;
    std::string started_at;    ///< text, for messages
    std::vector<std::string> table_sql; ///< tables the copy writes into ("schema"."table")
    /// Tables whose copy completed: display name -> the LSN of the snapshot it was copied under.
    std::map<std::string, Lsn> tables_done;
    std::vector<std::string> done_sql; ///< the same tables, "schema"."table"

    [[nodiscard]] bool done() const { return exists && state == "done"; }
};

/// Reads the run of `migration`; exists = false when the pgshift schema or row is absent.
/// Read-only. Throws pg::PgError.
[[nodiscard]] CopyRun read_run(pg::Connection& target, const std::string& migration);

/// Starts a (new) copy run: creates the pgshift schema and tables if needed, records the run as
/// `copying` for `slot` (attempts + 1) and `tables` (display name, SQL name) as pending.
void begin_run(pg::Connection& target, const std::string& migration, const std::string& slot,
               const std::vector<std::pair<std::string, std::string>>& tables);

/// Continues an interrupted run: attempts + 1, state copying; `tables` not recorded yet are
/// added as pending, tables not done stay pending, done ones are kept.
void resume_run(pg::Connection& target, const std::string& migration,
                const std::vector<std::pair<std::string, std::string>>& tables);

/// Records the slot's consistent point (where streaming starts once the copy is done).
void set_consistent_point(pg::Connection& target, const std::string& migration, Lsn lsn);

/// Records one table as done with its row and byte counts and the LSN of the snapshot it was
/// copied under.
void table_done(pg::Connection& target, const std::string& migration, const std::string& table,
                std::uint64_t rows, std::uint64_t bytes, Lsn sync_lsn);

/// Moves the run to `state` (indexing, done); `done` commits with synchronous_commit on.
void set_run_state(pg::Connection& target, const std::string& migration, const std::string& state);

} // namespace pgshift::copy
