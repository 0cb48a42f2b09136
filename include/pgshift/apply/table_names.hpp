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
// - Columns renamed on the source (`ALTER TABLE ... RENAME COLUMN`) arrive the same way: a
//   Relation message names a column the target lacks, and the target has one the message no
//   longer names; adding the new one would leave the existing rows without their values. So
//   the name of each source column (by attnum, which a rename keeps and a drop never reuses) is
//   recorded too, in pgshift.column_names: at a session's start for columns not recorded yet,
//   when pgshift adds a column, and with each rename. A column the stream names, the target
//   lacks, and whose attnum on the source was recorded under a name the target has and the
//   stream no longer names was renamed: with `schema: copy` it is renamed on the target (once
//   every earlier transaction committed, with its record in one transaction). Anything else
//   (no record, the source's catalog already changed again) is left to the ambiguity check of
//   columns.hpp, which stops apply with the statement.
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

/// A source relation's live columns by attnum.
using ColumnsByAttnum = std::map<int, std::string>;

/// The source relations of a publication and their columns, by relid.
struct Published {
    std::map<RelId, TableName> tables;
    std::map<RelId, ColumnsByAttnum> columns;
};

/// The source relations of `publication` (read on the source).
[[nodiscard]] Published published_relations(pg::Connection& source, const std::string& publication);

/// A column renamed on the source: its name on the target, its name in the stream.
struct ColumnRename {
    std::string from, to;
};

/// What the records say of a relation's columns that the target and its stream name differently.
struct ColumnChanges {
    std::vector<ColumnRename> renamed;
    bool others_dropped = false; ///< every other column the stream no longer names was dropped on the source
};

class TableNames {
public:
    explicit TableNames(std::string slot) : slot_(std::move(slot)) {}

    /// Records `published` (those not recorded yet) and loads every record of this slot; `fresh`
    /// (the slot is about to be created) first forgets what an earlier migration of the same
    /// name recorded. False (logged) when the target refuses the record's schema or table:
    /// renames then go unfollowed.
    bool load(pg::Connection& target, const Published& published, bool fresh);
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

    /// The columns of `missing` (named by relation `relid`'s Relation message, lacking on the
    /// target) that the source renamed from one of `extra` (the target table's columns the
    /// message no longer names): the attnum of each on the source now (`source`'s catalog) was
    /// recorded under that name; and whether each other column of `extra` was recorded under an
    /// attnum the source's table has dropped. Throws PgError.
    [[nodiscard]] ColumnChanges renamed_columns(pg::Connection& source, RelId relid,
                                                const std::vector<std::string>& missing,
                                                const std::vector<std::string>& extra) const;
    /// Renames `renames` on the target's table `qualified` and their records, in one
    /// transaction, and logs each. Throws PgError.
    void rename_columns(pg::Connection& target, RelId relid, const std::string& display, const std::string& qualified,
                        const std::vector<ColumnRename>& renames);
    /// Records columns `names` of relation `relid` (pgshift just added them to the target) under
    /// their attnums on the source (`source`'s catalog). Throws PgError.
    void remember_columns(pg::Connection& source, pg::Connection& target, RelId relid,
                          const std::vector<std::string>& names);

private:
    [[nodiscard]] std::optional<RelId> recorded_as(const TableName& name) const;
    void record(pg::Connection& target, RelId relid, const TableName& name);

    std::string slot_;
    bool usable_ = false;
    std::map<RelId, TableName> names_;
    std::map<RelId, ColumnsByAttnum> columns_;
};

} // namespace pgshift::apply
