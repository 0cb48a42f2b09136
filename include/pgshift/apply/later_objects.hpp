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
// - Privileges: schema: copy creates tables owned by pgshift's target role and copies no
//   grants, and a switch then leaves the application's role refused on the new primary. For
//   every role that owns or was granted a replicated table, or a view of the tables' schemas, on
//   the source (not a superuser), the privileges it holds there (has_table_privilege: owned,
//   granted, inherited) on the table or view, the sequences the table owns and its schema are
//   compared with what the same-named role holds on the target, and the missing ones granted. A role the target lacks is reported with what
//   to create (roles and passwords are not copied); pgshift's own source role is left out when
//   the target has no role of its name.
// - Functions, procedures and views in the schemas of the replicated tables (not an
//   extension's): the application calls them, and schema: copy creates only what the tables
//   need. Compared by name (and argument types); one the target lacks is created from
//   pg_get_functiondef / pg_get_viewdef (read with search_path pg_catalog, so every name is
//   qualified). One that cannot be created yet (it uses another the target lacks) is tried again
//   at the next look. A definition changed on the source (CREATE OR REPLACE) is replaced on the
//   target ("definition of function ..."); one that cannot be replaced in place fails with
//   PostgreSQL's error, listed.
// - Triggers of the replicated tables made or changed (definition or enabled state) on the
//   source: made the same on the target (they fire there after a cutover). With schema: copy a
//   missing or changed one blocks a switch, as a missing index does. One on the target alone
//   (the source dropped it, or the operator made it there) is listed with its DROP, never
//   dropped and never blocking: it rejects no row during apply.
// - Values added to the enum types of the replicated columns (ALTER TYPE ... ADD VALUE, which
//   decoding does not carry): each one the target's type lacks is added at the same place in
//   the order, and blocks a switch until it is. A target type with values the source's lacks,
//   or in another order, is the operator's (reported with the statement).
// - Row-level security: schema: copy creates tables without it (pg_dump's ROW SECURITY and
//   POLICY entries are not restored), and the privileges above then let the application's roles
//   read every row on the new primary where the old one showed them their own. Per replicated
//   table, whether it is enabled and forced and its policies (by name and by the statement that
//   makes each, read with search_path pg_catalog) are made the same as the source's, in one
//   transaction: policies dropped, replaced and created, then the switches. Never when that would
//   subject pgshift's own target role to the policies (apply must see every row), nor with a
//   role the target lacks: those are done by hand. A difference always blocks a switch, in
//   either schema mode: it decides who sees which rows.
// - Owners: schema: copy and the follower create objects owned by pgshift's target role. A
//   compared table (its partitions too), a view or a routine of their schemas owned on the
//   source by a role that is not a superuser is given to the same-named role on the target, so
//   that the application's next migration after a cutover may alter it and views and SECURITY
//   DEFINER functions run with the same role's rights as on the source; only when pgshift's
//   target role has that role's privileges (it keeps its own on the object), else by hand. The
//   schemas' CREATE privilege is compared with the others (PostgreSQL 15 no longer grants it to
//   PUBLIC on schema public, and the application's migrations create tables).
// - Default privileges (ALTER DEFAULT PRIVILEGES) of the roles, in those schemas or in every
//   schema: what the application's migrations create on the new primary after a cutover gets
//   the grants it got on the source (Supabase's defaults for anon and authenticated). Made the
//   same, grants and revokes, when pgshift's target role has the role's privileges.
// - EXECUTE on the functions and procedures of those schemas: PostgreSQL grants it to PUBLIC on
//   every new function, and a function the source keeps from PUBLIC (an administrative SECURITY
//   DEFINER one) would be callable by every role on the new primary. Revoked there as on the
//   source (with schema: copy a pending revoke holds up a switch), granted to PUBLIC where the
//   source does, and to the roles the source grants it.
// - Planner statistics: a replicated table with none on the target while the source's has them
//   (rows loaded by the initial copy, a partitioned table autovacuum never analyzes) is analyzed
//   there, once per table and daemon (an empty table gets none); never holding up a switch.
// - Partitions the source dropped or detached (a retention job): the target's are detached,
//   their rows kept in them, at a point of the stream where the source holds no row of their
//   range, so that the target's partitioned table then holds exactly the source's rows there
//   (later_definitions.cpp, partitions_gone, says when it is compared; the schema follower
//   holds apply at that point). Listed and blocking a switch until then with schema: copy.
// - Tables renamed on the source: apply renames the target's table when the table's next change
//   arrives (table_names.hpp), at its place in the stream. One renamed and not written since is
//   listed (from pgshift.table_names, this direction's records), with the statement to run by
//   hand, and holds up a switch: the new primary would lack the table by its new name.
#pragma once

#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace pgshift::apply {

/// What bringing a LaterObject to the target does.
enum class Change {
    build, ///< the source has it and the target lacks it: steps create it
    drop,  ///< a rule on the target only (the source dropped it): steps drop it
    grant, ///< privileges a role holds on the source and not on the target: steps grant them
    create, ///< a function, procedure or view of the tables' schemas, or an enum value, the target lacks
    secure, ///< a table's row-level security differs: steps, in one transaction, make it the source's
    rename, ///< a table renamed on the source keeps its old name on the target until its next change
    detach, ///< a partition the source dropped or detached: steps detach it, where `source_guard` holds
    owner,  ///< a table, view or routine owned by another role on the target: steps give it the source's
    revoke, ///< a routine PUBLIC may call on the target and not on the source: steps revoke that
    analyze, ///< a table without planner statistics on the target: steps ANALYZE it
    defaults, ///< a role's default privileges differ: steps make them the source's
};

/// One index or constraint the source has on a replicated table and the target lacks, a rule
/// the target has and the source no longer does, a role's privileges the target lacks, a
/// function or view it lacks, or a table's row-level security that differs.
struct LaterObject {
    std::string table;              ///< "public.t" (display form); empty for a role's privileges
    std::string what;               ///< "index t_email_idx", "NOT NULL of column c", "privileges of role app on ..."
    std::string name;               ///< a dropped rule's constraint, index or column; a grant's role
    Change change = Change::build;
    bool constraint = false;        ///< enforces a rule (unique, primary key, exclusion, check, foreign key)
    std::vector<std::string> steps; ///< SQL run on the target in order; empty: done by hand
    std::string by_hand;            ///< when steps is empty: why, and the statement to run
    std::string invalid_index;      ///< an invalid index of this name on the target, to drop first
    bool building = false;          ///< someone is building it on the target right now
    /// A query returning one boolean: the steps may run only while apply holds at a point of the
    /// stream where the source, read in a snapshot of that point, answers true
    /// (verify/common_point.hpp). Empty: any time.
    std::string source_guard;

    /// "unique constraint t_email_key of public.t".
    [[nodiscard]] std::string describe() const { return table.empty() ? what : what + " of " + table; }
    [[nodiscard]] bool dropped() const { return change == Change::drop; }
    /// Whether a cutover or rollback waits for it: a missing one that enforces a rule, or with
    /// schema: copy (`builds`) anything pgshift is about to build or drop (the new primary is to
    /// have every index of the old one, and no rule the old one dropped). Never privileges
    /// (which roles the application uses on the new primary is the operator's to say), nor
    /// functions and views (one may depend on what only the old server has). Always a
    /// difference in row-level security (the new primary would show other rows).
    [[nodiscard]] bool blocks_switch(bool builds) const
    {
        if (change == Change::secure || change == Change::rename)
            return true;
        if (change == Change::create)
            return constraint; // an enum's value: the new primary would refuse it
        if (change == Change::grant || change == Change::owner || change == Change::analyze ||
            change == Change::defaults)
            return false; // statistics: a table may have none after ANALYZE (no rows), and autovacuum makes them too
        if (change == Change::revoke)
            return builds; // every role could call it on the new primary
        if (change == Change::detach)
            return builds; // with verify, a comparison at the switch finds the rows
        return change == Change::drop ? builds && constraint : constraint || builds;
    }
    /// "<describe()> exists on the source but not on the target: <what happens>" (or, dropped,
    /// "... is on the target but not on the source: ..."): the reason it is done by hand, else
    /// `done` with schema: copy, else the statements to run.
    [[nodiscard]] std::string line(bool builds, const std::string& done) const;
};

/// What the source's tables in `publication` have and the target's same-named tables lack, the
/// rules those target tables have that the source dropped, and the privileges that roles hold
/// on the source's tables (their sequences and schemas) and not on the target's; in the order
/// to run them.
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
/// (CONCURRENTLY cannot run in a transaction block; a row-level security change's all in one). A failed concurrent build leaves an invalid
/// index, which the next schema_differences() names for dropping. Throws PgError.
void change_target(pg::Connection& target, const LaterObject& o);

} // namespace pgshift::apply
