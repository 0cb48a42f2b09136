// The bounded single-producer/single-consumer queue of transactions between reader and apply.
//
// Design notes
// - The data path is Boost.Lockfree's spsc_queue: the reader thread is the only producer and
//   the scheduler/apply thread the only consumer. A mutex and condition variable are used only
//   to sleep when the queue is empty or full, never to move data.
// - The bound is in bytes (apply.max_queue_bytes) plus a cap on entries. A transaction larger
//   than the whole budget is still accepted when the queue is empty, so progress never stops;
//   bounding such transactions themselves is the reader's job (spill files).
#pragma once

#include "pgshift/queue/transaction.hpp"

#include <boost/lockfree/spsc_queue.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>

namespace pgshift::queue {

class TxnQueue {
public:
    explicit TxnQueue(std::size_t max_bytes, std::size_t max_entries = 65536);
    ~TxnQueue();
    TxnQueue(const TxnQueue&) = delete;
    TxnQueue& operator=(const TxnQueue&) = delete;

    /// Producer only. Takes ownership and returns true, or returns false (txn untouched) when full.
    [[nodiscard]] bool try_push(std::unique_ptr<Transaction>& txn);
    /// Producer only. Waits up to `timeout` for room for `bytes` more.
    void wait_for_space(std::size_t bytes, std::chrono::milliseconds timeout);

    /// Consumer only. Waits up to `timeout`; nullptr when still empty.
    [[nodiscard]] std::unique_ptr<Transaction> pop(std::chrono::milliseconds timeout);

    [[nodiscard]] std::size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
    [[nodiscard]] std::size_t entries() const { return entries_.load(std::memory_order_relaxed); }
    [[nodiscard]] std::size_t max_bytes() const { return max_bytes_; }

private:
    [[nodiscard]] bool has_room(std::size_t bytes) const;

    const std::size_t max_bytes_;
    boost::lockfree::spsc_queue<Transaction*> ring_;
    std::atomic<std::size_t> bytes_{0};
    std::atomic<std::size_t> entries_{0};

    std::mutex sleep_mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
};

} // namespace pgshift::queue
