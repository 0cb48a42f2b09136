// Source relations as apply knows them: the target mapping and the conflict keys of a change.
//
// Design notes
// - A RelationInfo is immutable once built and shared (shared_ptr<const>) between the
//   scheduler, which resolves it against the target catalog on first use, and the workers,
//   which only read it. A new Relation message for the same relid makes a new RelationInfo
//   with a new generation; in-flight work keeps the one it was scheduled with.
// - Conflict keys (ARCHITECTURE rule 5): two changes that could touch the same target row, or
//   the same value of any unique index, must not execute concurrently. A key is a 64-bit hash of
//   (target table, column set, values); a hash collision only costs a needless wait. Values are
//   compared as the text the source sent, so two texts that the index considers equal (1.0 and
//   1.00 in a numeric) are not seen as a conflict: such cases, like a DELETE whose old row lacks
//   a secondary unique value, surface as a unique violation or deadlock and are retried once
//   every earlier batch has committed.
#pragma once

#include "pgshift/apply/statements.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pgshift::apply {

struct RelationInfo {
    std::string payload; ///< the raw Relation message (owns the bytes the decoded views point to)
    protocol::DecodeContext decode;
    RelationMapping mapping;
    /// Column sets (source column positions) no two target rows may share: the replica identity
    /// key and every unique index of the target table whose columns all come from the source.
    std::vector<std::vector<std::uint16_t>> unique_sets;
    /// Rows cannot be told apart (REPLICA IDENTITY FULL, no usable unique index): inserts need
    /// no key (nothing unique to collide on), updates and deletes cannot be keyed (barriers).
    bool table_key = false;
    std::uint64_t seed = 0; ///< hash of the target table's name, the start of every key
    /// Replica identity key columns (empty for REPLICA IDENTITY FULL).
    std::vector<std::uint16_t> identity;
    /// Changes may be compacted (compaction.hpp): a replica identity key whose every column's
    /// type has canonical text, and no trigger that fires during apply (ENABLE ALWAYS/REPLICA).
    bool compactable = false;
    /// Changes may be merged into multi-row statements and COPY: no trigger fires during apply.
    bool multirow = false;
    /// A compacted batch failed on this table (e.g. a unique swap): its changes are not
    /// compacted before this time (steady clock, ns), so that a workload that keeps doing it
    /// does not pay for a replay in every batch. Shared by the workers.
    struct PausedUntil {
        mutable std::atomic<std::int64_t> ns{0};
        PausedUntil() = default;
        PausedUntil(const PausedUntil& o) : ns(o.ns.load()) {}
        PausedUntil& operator=(const PausedUntil& o)
        {
            ns.store(o.ns.load());
            return *this;
        }
    } compaction_paused_until;

    [[nodiscard]] bool compaction_paused(std::chrono::steady_clock::time_point now) const
    {
        return now.time_since_epoch().count() < compaction_paused_until.ns.load(std::memory_order_relaxed);
    }
    void pause_compaction(std::chrono::steady_clock::time_point until) const
    {
        compaction_paused_until.ns.store(until.time_since_epoch().count(), std::memory_order_relaxed);
    }
};

/// The relation a row change (Insert, Update, Delete) names; RelId{} for other messages.
[[nodiscard]] RelId relid_of(const protocol::Message& change);

/// Resolves a Relation message against the target catalog (columns, unique indexes). Throws
/// TargetError (not retryable) when the table or a column is missing on the target.
[[nodiscard]] std::shared_ptr<const RelationInfo> resolve_relation(pg::Connection& catalog, std::string payload,
                                                                   const protocol::DecodeContext& decode,
                                                                   std::uint64_t generation);

/// Appends the conflict keys of one row change (Insert, Update or Delete) to `out`. Returns
/// false when the change cannot be keyed safely (a unique column's new value is an unchanged
/// TOAST value the old image does not carry; an update or delete of a table without a unique
/// index): its batch must then run alone.
[[nodiscard]] bool append_keys(const protocol::Message& change, const RelationInfo& rel, std::vector<std::uint64_t>& out);

} // namespace pgshift::apply
