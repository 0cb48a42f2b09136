// Mapping of source relations onto target tables, and the SQL text of apply statements.
//
// Design notes
// - Columns are mapped by name from the latest Relation message (rule 7). A source column that
//   does not exist on the target is an error: silently dropping it would lose data.
// - UPDATE ... SET lists only columns whose new value was sent; unchanged TOAST ('u') columns are
//   left out (rule 6). Statements are cached per shape: (kind, sent-column set, null-key set).
// - REPLICA IDENTITY FULL rows are located by (tableoid, ctid) of the first row equal to the old
//   image. Columns whose type has no btree equality (json, point, arrays/composites of them, ...)
//   are compared as text, which both sides render identically under the apply session settings;
//   PostgreSQL 15's own apply fails on such tables ("could not identify an equality operator").
//   NULL old values become IS NULL, so the statement shape includes the null set.
// - A missing row is found from the affected-row count by the client, or, when the worker sends
//   COMMIT in the same round trip, by the server: guarded() makes the statement fail.
// - Pure: builds strings only, no I/O. Parameters are numbered in the order params_of() returns.
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshift::apply {

/// A target column as read from the target catalog.
struct TargetColumn {
    std::string name;
    bool has_btree_equality = true; ///< compare with '=' (else as text)
    bool generated = false;
    std::string type;               ///< schema-qualified type name, for casts (no typmod)
    bool canonical_text = false;    ///< equal values always have equal text (compaction keys)
};

/// A source relation (from its Relation message) resolved against the target table.
struct RelationMapping {
    RelId relid;
    std::string source_name;   ///< "schema.table" as the source names it (for messages)
    std::string qualified;     ///< quoted target name: "schema"."table"
    bool partitioned = false;  ///< target relkind 'p': TRUNCATE without ONLY
    protocol::ReplicaIdentity replident = protocol::ReplicaIdentity::default_;
    /// For each source column (Relation order): its name, key flag, and target column.
    struct Column {
        std::string name;
        std::string quoted;
        bool key = false;
        bool has_btree_equality = true;
        std::string type; ///< the target column's type, for casts in multi-row statements
        bool canonical_text = false;
    };
    std::vector<Column> columns;
    std::uint64_t generation = 0; ///< distinguishes statements of successive Relation messages
};

/// Builds a mapping; throws TargetError (non-retryable) naming the table and column when a
/// source column is missing on the target or maps onto a generated column.
[[nodiscard]] RelationMapping map_relation(const protocol::Relation& rel, const std::vector<TargetColumn>& target,
                                           bool target_partitioned, std::uint64_t generation);

/// One SQL statement shape and how to pick its parameters from a change.
struct Statement {
    std::string key; ///< cache key (unique per mapping generation and shape)
    std::string sql;
    /// Parameter sources, in $n order: which tuple (0 = new, 1 = old/key) and column index.
    struct Param {
        std::uint8_t tuple = 0;
        std::uint16_t column = 0;
    };
    std::vector<Param> params; ///< per row, for a multi-row statement
    std::size_t rows = 1;
};

[[nodiscard]] Statement build_insert(const RelationMapping& m, const protocol::TupleData& row);
/// `key_row` is the old tuple (K or O) when sent, else the new tuple.
[[nodiscard]] Statement build_update(const RelationMapping& m, const protocol::TupleData& new_row,
                                     const protocol::TupleData& key_row, bool key_from_old, bool full_old);
[[nodiscard]] Statement build_delete(const RelationMapping& m, const protocol::TupleData& old_row, bool full_old);

// Multi-row statements (rows >= 2). Updates and deletes locate rows by the replica identity key
// taken from tuple 1 (an old-key tuple); parameters carry casts to the target column types so
// that the VALUES list has the columns' types.
[[nodiscard]] Statement build_insert_rows(const RelationMapping& m, std::size_t rows);
/// `new_row` gives the shape: its unchanged-TOAST columns stay out of SET, as do key columns.
[[nodiscard]] Statement build_update_rows(const RelationMapping& m, const protocol::TupleData& new_row, std::size_t rows);
[[nodiscard]] Statement build_delete_rows(const RelationMapping& m, std::size_t rows);
/// `sql` (an UPDATE or DELETE) as a query that fails when it changed fewer than `rows` rows, so
/// that a missing row aborts the transaction on the server, before a COMMIT sent in the same
/// round trip: SQLSTATE 22P02 with the message "... pgshift: N of M row(s) to change not found".
[[nodiscard]] std::string guarded(const std::string& sql, std::size_t rows);
/// COPY ... FROM STDIN (text format) of every column, and one row in that format.
[[nodiscard]] std::string build_copy(const RelationMapping& m);
void append_copy_row(std::string& out, const protocol::TupleData& row);

} // namespace pgshift::apply
