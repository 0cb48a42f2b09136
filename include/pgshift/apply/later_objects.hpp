// Indexes and constraints made on the source after its tables reached the target: an
// application deploy during the migration window adds an index or a unique constraint on the
// source, and logical decoding carries no DDL.
//
// Design notes
// - Compared on the replicated (published) tables, by name and by definition: an object the
//   target has under another name with the same definition counts as present. A constraint is
//   compared with pg_get_constraintdef, an index with pg_get_indexdef minus its name.
// - Built on the target without stopping apply: indexes with CREATE INDEX CONCURRENTLY (apply's
//   writes go on meanwhile); unique and primary-key constraints as such an index, then
//   ADD CONSTRAINT ... USING INDEX; check and foreign-key constraints NOT VALID, then VALIDATE
//   (which does not block writes). The statements that take a strong lock for a moment wait at
//   most 2 s for it and are retried later rather than queue apply behind them.
// - A concurrent build that fails (a cancel, a unique violation while the target still lags
//   behind the row that made the source's data unique) leaves an invalid index: it is dropped
//   and built again at the next look, also when an earlier run left it, unless a build of it is
//   running. A unique constraint whose index was built but whose ADD CONSTRAINT failed gets only
//   the ADD at the next look.
// - Not built, only reported with the statement to run: indexes and constraints on partitioned
//   tables (PostgreSQL cannot build those CONCURRENTLY) and exclusion constraints (they hold an
//   ACCESS EXCLUSIVE lock while their index builds).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace pgshift::apply {

/// One index or constraint the source has on a replicated table and the target lacks.
struct LaterObject {
    std::string table;              ///< "public.t" (display form)
    std::string what;               ///< "index t_email_idx", "unique constraint t_email_key", ...
    bool constraint = false;        ///< enforces a rule (unique, primary key, exclusion, check, foreign key)
    std::vector<std::string> steps; ///< SQL run on the target in order; empty: built by hand
    std::string by_hand;            ///< when steps is empty: why, and the statement to run
    std::string invalid_index;      ///< an invalid index of this name on the target, to drop first
    bool building = false;          ///< someone is building it on the target right now

    /// "unique constraint t_email_key of public.t".
    [[nodiscard]] std::string describe() const { return what + " of " + table; }
    /// Whether a cutover or rollback waits for it: it enforces a rule, or with schema: copy
    /// (`builds`) the new primary is to have every index of the old one.
    [[nodiscard]] bool blocks_switch(bool builds) const { return constraint || builds; }
    /// "<describe()> exists on the source but not on the target: <what happens>": the reason it
    /// is built by hand, else `built` with schema: copy, else the statements to run.
    [[nodiscard]] std::string missing_line(bool builds, const std::string& built) const;
};

/// What the source's tables in `publication` have and the target's same-named tables lack.
/// PostgreSQL's pg_get_indexdef() and pg_get_constraintdef() wait for a table's ACCESS
/// EXCLUSIVE lock (DDL, LOCK TABLE): the reads wait `lock_timeout` at most, in one transaction
/// per connection (which must not be in one). Throws PgError (55P03 after the timeout).
[[nodiscard]] std::vector<LaterObject> missing_on_target(pg::Connection& source, pg::Connection& target,
                                                         const std::string& publication,
                                                         std::chrono::milliseconds lock_timeout);
/// The same for the source tables `tables` (qualified SQL names), e.g. before a publication exists.
[[nodiscard]] std::vector<LaterObject> missing_on_target(pg::Connection& source, pg::Connection& target,
                                                         const std::vector<std::string>& tables,
                                                         std::chrono::milliseconds lock_timeout);

/// Builds `o` on the target: drops its invalid leftover, then runs its steps, each on its own
/// (CONCURRENTLY cannot run in a transaction block). A failed concurrent build leaves an invalid
/// index, which the next missing_on_target() names for dropping. Throws PgError.
void build_on_target(pg::Connection& target, const LaterObject& o);

} // namespace pgshift::apply
