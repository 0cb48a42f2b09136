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

#include <atomic>
#include <cstdint>

namespace pgshift::queue {

struct Progress {
    // Written by the reader thread.
    std::atomic<std::uint64_t> received{0};    ///< highest WAL position received (data or keepalive)
    std::atomic<std::uint64_t> server_end{0};  ///< WAL end from the last keepalive
    std::atomic<std::uint64_t> pushed_end{0};  ///< end_lsn of the last transaction queued
    std::atomic<bool> in_transaction{false};   ///< a transaction is being received or waits to be queued

    // Written by the apply thread.
    std::atomic<std::uint64_t> handled_end{0}; ///< end_lsn of the last transaction applied or skipped
    std::atomic<std::uint64_t> written_end{0}; ///< end_lsn of the last transaction committed on the target
    std::atomic<std::uint64_t> durable{0};     ///< flushed origin progress on the target (rule 3)
    std::atomic<std::uint64_t> transactions_applied{0};
    std::atomic<std::uint64_t> changes_applied{0};

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
