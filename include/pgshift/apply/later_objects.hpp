// Indexes and constraints made on the source after its tables reached the target, and rules
// dropped there: an application deploy during the migration window adds an index or a unique
// constraint on the source, or drops a unique constraint, a check or a NOT NULL, and logical
// decoding carries no DDL.
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
// - A rule the target enforces on a replicated table and the source no longer has (a check,
//   foreign-key, unique or exclusion constraint, a unique index, a NOT NULL) makes the target
//   reject rows the source accepts: apply stops at the first one, and after a cutover the
//   application's writes fail. It is dropped on the target (a moment's lock, waited for 2 s at
//   most; a unique index CONCURRENTLY). Dropping early is always safe: the target only accepts
//   more. Primary keys are left alone (a table that lost its key is not replicated by key), and
//   so are non-unique indexes (they reject nothing; the operator may have made them).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace pgshift::apply {

/// One index or constraint the source has on a replicated table and the target lacks, or
/// (`dropped`) a rule the target has and the source no longer does.
struct LaterObject {
    std::string table;              ///< "public.t" (display form)
    std::string what;               ///< "index t_email_idx", "unique constraint t_email_key", "NOT NULL of column c"
    std::string name;               ///< for a dropped rule: its constraint's or index's name, or its column
    bool constraint = false;        ///< enforces a rule (unique, primary key, exclusion, check, foreign key)
    bool dropped = false;           ///< on the target only: the source dropped it; steps drop it
    std::vector<std::string> steps; ///< SQL run on the target in order; empty: built by hand
    std::string by_hand;            ///< when steps is empty: why, and the statement to run
    std::string invalid_index;      ///< an invalid index of this name on the target, to drop first
    bool building = false;          ///< someone is building it on the target right now

    /// "unique constraint t_email_key of public.t".
    [[nodiscard]] std::string describe() const { return what + " of " + table; }
    /// Whether a cutover or rollback waits for it: a missing one that enforces a rule, or with
    /// schema: copy (`builds`) anything pgshift is about to build or drop (the new primary is to
    /// have every index of the old one, and no rule the old one dropped).
    [[nodiscard]] bool blocks_switch(bool builds) const { return dropped ? builds : constraint || builds; }
    /// "<describe()> exists on the source but not on the target: <what happens>" (or, dropped,
    /// "... is on the target but no longer on the source: ..."): the reason it is done by hand,
    /// else `done` with schema: copy, else the statements to run.
    [[nodiscard]] std::string line(bool builds, const std::string& done) const;
};

/// What the source's tables in `publication` have and the target's same-named tables lack, and
/// the rules those target tables have that the source dropped; in the order to run them.
/// PostgreSQL's pg_get_indexdef() and pg_get_constraintdef() wait for a table's ACCESS
/// EXCLUSIVE lock (DDL, LOCK TABLE): the reads wait `lock_timeout` at most, in one transaction
/// per connection (which must not be in one). Throws PgError (55P03 after the timeout).
[[nodiscard]] std::vector<LaterObject> schema_differences(pg::Connection& source, pg::Connection& target,
                                                          const std::string& publication,
                                                          std::chrono::milliseconds lock_timeout);
/// The same for the source tables `tables` (qualified SQL names), e.g. before a publication exists.
[[nodiscard]] std::vector<LaterObject> schema_differences(pg::Connection& source, pg::Connection& target,
                                                          const std::vector<std::string>& tables,
                                                          std::chrono::milliseconds lock_timeout);

/// Brings `o` to the target: drops an invalid leftover, then runs its steps, each on its own
/// (CONCURRENTLY cannot run in a transaction block). A failed concurrent build leaves an invalid
/// index, which the next schema_differences() names for dropping. Throws PgError.
void change_target(pg::Connection& target, const LaterObject& o);

} // namespace pgshift::apply
