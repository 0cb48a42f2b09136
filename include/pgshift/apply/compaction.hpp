// Net-change compaction: the row changes of a group of source transactions that one worker
// commits as one target transaction, reduced to each row's net effect.
//
// Design notes
// - Why it is exact: the group commits atomically on the target, so only its final state is
//   ever observable. For a table with a replica identity key, every statement touches exactly
//   the row of its key, so the final state is, key by key, the net effect applied to that key's
//   row, whatever the order of different keys. Keys are compared as the text the source sent,
//   which is only sound when equal values always have equal text: RelationInfo marks a table
//   compactable only when every key column's type guarantees that (integers, text with a
//   deterministic collation, uuid, dates, ...; not numeric, float, interval, citext).
// - Per key: insert + updates -> one insert of the final image; updates -> one update (an
//   unchanged-TOAST 'u' column takes an earlier image's value when the group has one, otherwise
//   stays 'u', i.e. out of SET); insert + delete -> nothing; delete + insert -> delete then
//   insert. A key-changing update is a delete of the old key and an insert of the new one, which
//   needs a complete new image: when a 'u' column cannot be filled in, it is not compacted.
// - Anything that cannot be compacted (a transition a consistent source cannot produce, a key
//   that is NULL or unknown, a key change with an unknown column) flushes every pending net
//   effect and then passes the change on as received, so order is kept around it. Tables that
//   are not compactable keep their changes in order (they are independent of other tables).
// - Emission: deletes, then updates, then inserts (freeing unique values before they are
//   reused), grouped by table and statement shape so that runs become multi-row statements.
//   Transient states can still differ from the source's (a unique swap); the worker replays
//   such a group uncompacted when it hits a unique violation or a missing row.
// - Pure: no I/O; owns copies of the row images (a decoded change's views die with its buffer).
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgshift::apply {

/// An owned column value.
struct Value {
    protocol::ColumnKind kind = protocol::ColumnKind::null;
    std::string data;
    bool operator==(const Value&) const = default;
};
using Row = std::vector<Value>;

[[nodiscard]] Row own(const protocol::TupleData& t);
/// A TupleData whose views point into `r` (valid while `r` lives unchanged).
[[nodiscard]] protocol::TupleData view(const Row& r);

enum class OpKind : std::uint8_t { insert, update, del };

/// One row operation for the target: a change as received, or the net effect of several.
struct RowOp {
    OpKind kind = OpKind::insert;
    const void* table = nullptr; ///< the caller's table (RelationInfo)
    const void* txn = nullptr;   ///< the last source transaction behind it (error messages)
    /// How `old` locates the row of an update or delete: key (only key columns set), full (the
    /// whole old row), none (an update whose key is taken from `row`).
    protocol::OldKind old_kind = protocol::OldKind::none;
    Row row; ///< insert, update: the new image ('u' columns of an update stay unchanged)
    Row old; ///< update, delete: the old key or old row; empty with old_kind none
    /// No other operation of the same flush touches this row: safe to merge into a multi-row
    /// statement with others (set by the compactor only).
    bool distinct = false;
};

/// What the compactor needs to know of a table.
struct CompactTable {
    const void* id = nullptr;  ///< identifies the definition (RelationInfo)
    std::uint64_t relid = 0;   ///< the source relation: a new definition of it flushes first
    /// Replica identity key columns; null when the table is not compactable (its changes are
    /// kept in order).
    const std::vector<std::uint16_t>* key = nullptr;
};

class Compactor {
public:
    /// Adds one change (old_kind and `old` as received). Appends to `out` what must go before it
    /// can continue: when the change cannot be compacted, every pending net effect, then the
    /// change itself.
    void add(const CompactTable& t, RowOp op, std::vector<RowOp>& out);
    /// Appends every pending net effect (deletes, updates, inserts of compactable tables, then
    /// the in-order changes of the others) and starts empty.
    void flush(std::vector<RowOp>& out);
    [[nodiscard]] bool empty() const { return entries_.empty() && ordered_.empty(); }
    /// Bytes of row data held (a caller bounds a group's memory with it).
    [[nodiscard]] std::size_t bytes() const { return bytes_; }

private:
    enum class Net : std::uint8_t { none, ins, upd, del, delins };
    struct Entry {
        const void* table = nullptr;
        std::size_t table_order = 0;
        Net net = Net::none;
        Row key; ///< the key as an old-key tuple (only key columns set)
        Row row; ///< ins, upd, delins: the image
        const void* txn = nullptr;
    };
    struct Table {
        const void* id = nullptr;
        std::vector<RowOp> ordered; ///< not compactable: changes in order
    };

    /// The key of `row` (key columns only), and its lookup string; false when a key value is
    /// NULL or an unchanged TOAST value that `fallback` (the old key) cannot supply.
    static bool key_of(const std::vector<std::uint16_t>& key, const Row& row, const Row* fallback, Row& out,
                       std::string& lookup);
    Entry& entry(const CompactTable& t, std::size_t table_order, Row key, const std::string& lookup);
    std::size_t table_order(const CompactTable& t);
    void pass_through(const CompactTable& t, RowOp op, std::vector<RowOp>& out);
    static std::size_t size_of(const Row& r);

    std::vector<Entry> entries_; ///< first-seen order
    std::unordered_map<std::string, std::size_t> index_;
    std::vector<Table> tables_;                    ///< first-seen order
    std::unordered_map<const void*, std::size_t> table_index_;
    std::unordered_map<std::uint64_t, const void*> definition_; ///< relid -> current definition
    std::vector<std::size_t> ordered_;             ///< tables with in-order changes
    std::size_t bytes_ = 0;
};

} // namespace pgshift::apply
