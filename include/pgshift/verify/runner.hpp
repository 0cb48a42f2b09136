// Verify (SPEC section 5): compares every replicated table on both sides at one common LSN while
// replication keeps running.
//
// Design notes
// - One common point. A temporary logical slot exports a snapshot of the source at its
//   consistent point X; the comparison sessions on the source import it. A transactional
//   logical message written after X makes a transaction with commit LSN >= X come down the
//   stream; apply is asked to hold there (apply::Hold): it applies everything that committed
//   before X, keeps the rest back, and says so once committed. The target sessions then take
//   their REPEATABLE READ snapshots and apply resumes at once: the hold lasts as long as opening
//   a few transactions. Both sides now show exactly the source's state at X, and the reader
//   kept reading meanwhile (bounded by the queue as usual).
// - Per table: row count and, with checksums, an order-independent digest (the sum of a 64-bit
//   hash of each row's text, columns in source order, under identical session settings on both
//   sides) computed on each server. Equal: match. Different, for a table with a primary key (or
//   replica identity index): the key range is bisected (split points read on the source)
//   until a range holds at most 200 rows, whose keys and row hashes are listed on both sides and
//   compared: the report names each differing range and key (at most 100 keys). Tables without
//   a key are compared as a whole.
// - Parallel: up to 4 pairs of sessions, tables largest first. Progress (tables done, rows
//   compared) is visible while it runs; the result stays until the next run.
// - Gives up cleanly: if apply does not reach the hold point within 60 s (paused, failed,
//   far behind), the hold is released and the comparison reports an error; a session error
//   marks that table `error` and the others go on.
#pragma once

#include "pgshift/apply/hold.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/control/status.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace pgshift::verify {

class Runner {
public:
    /// `applied`: the applied position now (for the report).
    Runner(const config::Config& cfg, apply::Hold& hold, std::function<std::uint64_t()> applied);
    ~Runner(); ///< stops a running comparison and joins
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    /// Starts a comparison on its own thread; false when one is running.
    bool start(bool checksums);
    [[nodiscard]] control::VerifyReport report() const;
    /// Waits until the running comparison (if any) ended.
    void wait();
    /// Stops the running comparison (if any) and waits for it; the report says it was stopped.
    void cancel();
    /// Whether a comparison is running now.
    [[nodiscard]] bool running() const { return running_.load(); }

private:
    void run(bool checksums);
    void set(const std::function<void(control::VerifyReport&)>& change);

    const config::Config& cfg_;
    apply::Hold& hold_;
    std::function<std::uint64_t()> applied_;
    mutable std::mutex mutex_;
    control::VerifyReport report_; // guarded by mutex_
    std::atomic<bool> running_{false};
    std::atomic<bool> stop_{false};
    std::uint64_t runs_ = 0;
    std::thread thread_;
};

} // namespace pgshift::verify
