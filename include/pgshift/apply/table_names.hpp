// Tables renamed on the source: the target's table of each source relation, by relid.
//
// Design notes
// - Logical decoding carries no DDL: after `ALTER TABLE orders RENAME TO purchases` on the
//   source, the next change of that table comes with a Relation message that names "purchases"
//   under the same relid, and the target still has "orders". Matching by name alone stops apply
//   there, and a swap of two tables' names (`a` to `a_old`, `a_new` to `a`, as online
//   schema-change tools do) would even apply one table's changes to the other's rows.
// - So the target's name of the table each source relid streams into is recorded on the target,
//   in pgshift.table_names (per slot: each direction has its own relids): at a session's start
//   for every published table not recorded yet (the source's names then, which are the target's),
//   when a change first uses a relation, and with each rename, in the rename's own transaction
//   (a crash leaves either both or neither).
// - A Relation message whose name differs from the record is a rename on the source. With
//   `schema: copy` the target's table is renamed (moved to the other schema first when that
//   changed) once every earlier transaction has committed; a table of the new name that the
//   record gives to another relid (a swap half done) is first moved aside under
//   "pgshift_moved_<relid>", to be renamed in turn when that relation's message comes. With
//   `schema: verify` apply stops with the statement to run; once the target has the new name
//   (the operator renamed it) the record follows.
// - Recording is best effort: a target role that may not create the schema pgshift leaves
//   renames unfollowed (logged once), as before this existed.
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/pg/connection.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::apply {

/// A table's schema and name, unquoted.
struct TableName {
    std::string nspname, relname;
    [[nodiscard]] std::string sql() const { return pg::quote_ident(nspname) + "." + pg::quote_ident(relname); }
    [[nodiscard]] std::string display() const { return nspname + "." + relname; }
    bool operator==(const TableName&) const = default;
};

/// The statements that make table `from` be `to` ("ALTER TABLE ... SET SCHEMA ...; ALTER TABLE
/// ... RENAME TO ..."; either alone when only one part differs).
[[nodiscard]] std::string rename_statement(const TableName& from, const TableName& to);

/// The source relations of `publication`, by relid (read on the source).
[[nodiscard]] std::map<RelId, TableName> published_relations(pg::Connection& source, const std::string& publication);

class TableNames {
public:
    explicit TableNames(std::string slot) : slot_(std::move(slot)) {}

    /// Records `published` (those not recorded yet) and loads every record of this slot; `fresh`
    /// (the slot is about to be created) first forgets what an earlier migration of the same
    /// name recorded. False (logged) when the target refuses the record's schema or table:
    /// renames then go unfollowed.
    bool load(pg::Connection& target, const std::map<RelId, TableName>& published, bool fresh);
    /// Forgets `slot`'s records (finish), when there are any.
    static void forget(pg::Connection& target, const std::string& slot);
    /// Records `name` for `relid` if nothing is recorded for it yet (a relation the session's
    /// start did not know, e.g. one that joined since).
    void remember(pg::Connection& target, RelId relid, const TableName& name);
    /// The recorded target name of `relid` when it differs from `stream` (the Relation
    /// message's): the source renamed it.
    [[nodiscard]] std::optional<TableName> renamed(RelId relid, const TableName& stream) const;
    /// Makes the target's table of `relid` be named `to` (recorded as `from`), in one
    /// transaction with its record: with `follow` (schema: copy) by renaming it; without, only
    /// when the target already has `to` (the operator renamed it), else TargetError with the
    /// statement to run. Throws PgError, TargetError.
    void rename(pg::Connection& target, RelId relid, const TableName& from, const TableName& to, bool follow);

private:
    [[nodiscard]] std::optional<RelId> recorded_as(const TableName& name) const;
    void record(pg::Connection& target, RelId relid, const TableName& name);

    std::string slot_;
    bool usable_ = false;
    std::map<RelId, TableName> names_;
};

} // namespace pgshift::apply
