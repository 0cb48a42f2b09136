// Positions shared between the reader and the apply side, and the rule for what may be confirmed.
//
// Design notes
// - Every field has a single writer thread (named below); readers load with acquire.
// - confirmable_flush() implements correctness rule 3: the flush position sent to the source is
//   the durably applied watermark; only when nothing is pending at all (no open transaction,
//   every pushed transaction handled, every written one durable) may it move to the server's
//   WAL end, otherwise an idle or filtered workload would never let the slot advance.
#pragma once

#include "pgshift/common/lsn.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

namespace pgshift::queue {

/// Cumulative counters for the daemon's lifetime (all sessions); any thread may increment.
struct Stats {
    std::atomic<std::uint64_t> transactions_applied{0};
    std::atomic<std::uint64_t> changes_insert{0}, changes_update{0}, changes_delete{0}, changes_truncate{0};
    std::atomic<std::uint64_t> wal_received_bytes{0};
    std::atomic<std::uint64_t> errors_source{0}, errors_decode{0}, errors_apply{0}, errors_control{0};
    std::atomic<std::uint64_t> reconnects_source{0}, reconnects_target{0};
    std::atomic<std::uint64_t> spill_errors{0};

    // Parallel apply (apply::Engine): batches and where their time went.
    static constexpr std::size_t k_max_workers = 64;
    std::atomic<int> workers{0};                  ///< apply workers of the current session
    std::array<std::atomic<std::uint8_t>, k_max_workers> worker_state{}; ///< apply::WorkerState
    std::atomic<std::uint64_t> batches_dispatched{0}, batches_committed{0};
    /// Batches handed straight to the worker running the batch they wait for (a chain).
    std::atomic<std::uint64_t> batches_chained{0};
    /// Batches the scheduler applied itself (nothing in flight, nothing queued: no hand-off).
    std::atomic<std::uint64_t> batches_inline{0};
    /// Batches whose COMMIT went in the same round trip as their statements (the gate was open).
    std::atomic<std::uint64_t> batches_one_round_trip{0};
    /// Microseconds batches spent: closed but no worker free (dispatch), waiting for a
    /// conflicting earlier batch (dependency), executed and waiting for their turn (commit).
    std::atomic<std::uint64_t> wait_dispatch_micros{0}, wait_dependency_micros{0}, wait_commit_micros{0};
    /// Batches rolled back and run again: a unique violation or deadlock that slipped through
    /// the keys (conflict), or an earlier batch waiting for a lock this one held (blocked).
    std::atomic<std::uint64_t> retries_conflict{0}, retries_blocked{0};
    /// What the target was asked to do: statements (a COPY is one) and the rows they carried,
    /// against the changes received (changes_*): compaction and multi-row statements at work.
    std::atomic<std::uint64_t> statements_executed{0}, rows_written{0};
    /// Compacted batches replayed uncompacted (a transient state differed from the source's).
    std::atomic<std::uint64_t> compaction_fallbacks{0};

    /// Source commit to target commit latency; bucket bounds in seconds, +Inf implicit.
    static constexpr std::array<double, 12> k_buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10,  30};
    std::array<std::atomic<std::uint64_t>, k_buckets.size()> latency_buckets{}; ///< non-cumulative
    std::atomic<std::uint64_t> latency_count{0};
    std::atomic<std::uint64_t> latency_sum_micros{0};

    void observe_latency(double seconds)
    {
        seconds = std::max(0.0, seconds);
        for (std::size_t i = 0; i < k_buckets.size(); ++i)
            if (seconds <= k_buckets[i]) {
                latency_buckets[i].fetch_add(1, std::memory_order_relaxed);
                break;
            }
        latency_count.fetch_add(1, std::memory_order_relaxed);
        latency_sum_micros.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
    }
};

/// Per-session positions. A new session gets a new Progress: nothing of an earlier session's
/// stream (in particular its server WAL end) may leak into what the new one confirms.
struct Progress {
    // Written by the reader thread.
    std::atomic<std::uint64_t> received{0};    ///< highest WAL position received (data or keepalive)
    std::atomic<std::uint64_t> server_end{0};  ///< WAL end from the last keepalive
    std::atomic<std::uint64_t> pushed_end{0};  ///< end_lsn of the last transaction queued
    std::atomic<bool> in_transaction{false};   ///< a transaction is being received or waits to be queued
    std::atomic<std::uint64_t> confirmed{0};   ///< flush position last reported to the source

    // Written by the apply thread.
    std::atomic<std::uint64_t> handled_end{0}; ///< end_lsn of the last transaction applied or skipped
    std::atomic<std::uint64_t> written_end{0}; ///< end_lsn of the last transaction committed on the target
    std::atomic<std::uint64_t> durable{0};     ///< flushed origin progress on the target (rule 3)

    /// `queue_entries`: the queue's entry cap. The ring must hold every queued transaction plus
    /// the ones being applied and waiting to be queued.
    explicit Progress(std::size_t queue_entries)
        : ring_size(std::bit_ceil(queue_entries + 2 + 256)), commit_ts_ring(new std::atomic<std::int64_t>[ring_size])
    {
    }

    // Commit times of queued transactions, for lag in seconds: the reader writes slot
    // (pushed_seq % size) before publishing pushed_seq; apply publishes applied_seq after commit.
    const std::size_t ring_size;
    std::unique_ptr<std::atomic<std::int64_t>[]> commit_ts_ring;
    std::atomic<std::uint64_t> pushed_seq{0};
    std::atomic<std::uint64_t> applied_seq{0};

    /// Source commit time (PG microseconds) of the oldest queued-but-unapplied transaction.
    [[nodiscard]] std::optional<std::int64_t> oldest_unapplied_commit_ts() const
    {
        auto applied = applied_seq.load(std::memory_order_acquire);
        auto pushed = pushed_seq.load(std::memory_order_acquire);
        if (applied >= pushed)
            return std::nullopt;
        return commit_ts_ring[(applied + 1) % ring_size].load(std::memory_order_acquire);
    }

    /// The flush LSN the reader may report now. Never below `durable`.
    [[nodiscard]] Lsn confirmable_flush() const
    {
        auto d = durable.load(std::memory_order_acquire);
        bool idle = !in_transaction.load(std::memory_order_acquire) &&
                    handled_end.load(std::memory_order_acquire) >= pushed_end.load(std::memory_order_acquire) &&
                    d >= written_end.load(std::memory_order_acquire);
        if (!idle)
            return Lsn(d);
        auto e = server_end.load(std::memory_order_acquire);
        auto p = pushed_end.load(std::memory_order_acquire);
        return Lsn(std::max({d, e, p}));
    }
};

} // namespace pgshift::queue
