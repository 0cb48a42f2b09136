// Bounded SPSC transaction queue: lock-free data path, condition variables only for sleeping.
#include "pgshift/queue/txn_queue.hpp"

namespace pgshift::queue {

TxnQueue::TxnQueue(std::size_t max_bytes, std::size_t max_entries) : max_bytes_(max_bytes), ring_(max_entries) {}

TxnQueue::~TxnQueue()
{
    ring_.consume_all([](Transaction* t) { delete t; });
}

bool TxnQueue::has_room(std::size_t bytes) const
{
    // An oversized transaction goes through alone, so a single big one cannot wedge the stream.
    auto used = bytes_.load(std::memory_order_acquire);
    return used == 0 || used + bytes <= max_bytes_;
}

bool TxnQueue::try_push(std::unique_ptr<Transaction>& txn)
{
    if (!has_room(txn->bytes) || ring_.write_available() == 0)
        return false;
    std::size_t b = txn->bytes;
    bytes_.fetch_add(b, std::memory_order_acq_rel);
    entries_.fetch_add(1, std::memory_order_acq_rel);
    bool pushed = ring_.push(txn.get());
    (void)pushed; // single producer and write_available() > 0: cannot fail
    txn.release();
    {
        // Taking the mutex orders this notify after a consumer's predicate check.
        std::lock_guard lk(sleep_mutex_);
    }
    not_empty_.notify_one();
    return true;
}

void TxnQueue::wait_for_space(std::size_t bytes, std::chrono::milliseconds timeout)
{
    std::unique_lock lk(sleep_mutex_);
    not_full_.wait_for(lk, timeout, [&] { return has_room(bytes) && ring_.write_available() > 0; });
}

std::unique_ptr<Transaction> TxnQueue::pop(std::chrono::milliseconds timeout)
{
    Transaction* t = nullptr;
    if (!ring_.pop(t)) {
        std::unique_lock lk(sleep_mutex_);
        not_empty_.wait_for(lk, timeout, [&] { return ring_.read_available() > 0; });
        if (!ring_.pop(t))
            return nullptr;
    }
    bytes_.fetch_sub(t->bytes, std::memory_order_acq_rel);
    entries_.fetch_sub(1, std::memory_order_acq_rel);
    {
        std::lock_guard lk(sleep_mutex_);
    }
    not_full_.notify_one();
    return std::unique_ptr<Transaction>(t);
}

} // namespace pgshift::queue
