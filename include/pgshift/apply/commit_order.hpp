// The commit gate and the in-flight registry: batches commit strictly in source order.
//
// Design notes
// - ARCHITECTURE rule 2 has one home: batches are numbered 1, 2, ... in source order by the
//   scheduler; a worker may commit batch s only once batch s-1 committed (wait_committed(s-1)),
//   and reports it with committed(s). The committed batches are therefore always a prefix of
//   the source order, so the resume point after a crash is the maximum of the workers' origin
//   progress, and the durable watermark is that maximum flushed (Engine::refresh_durable).
// - Dependencies (rule 5) use the same watermark: a batch that conflicts with batch d may start
//   executing once wait_committed(d) returns.
// - abort() wakes every waiter: a failed worker or a stop that rolled back a batch means no later
//   batch may commit in this session.
// - The registry says which backend executes which batch, for the watchdog of a worker waiting
//   at the gate: if an earlier batch's backend waits for a lock this worker holds (a wait
//   PostgreSQL cannot see, because ours is in the gate), this worker rolls back and re-runs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace pgshift::apply {

class CommitOrder {
public:
    enum class Wait { ready, aborted, timeout };

    /// Waits until batch `seq` (and so every batch before it) committed, at most `timeout`.
    /// wait_committed(0) is ready at once.
    Wait wait_committed(std::uint64_t seq, std::chrono::milliseconds timeout);
    /// Batch `seq` committed; it must be committed() + 1.
    void committed(std::uint64_t seq);
    [[nodiscard]] std::uint64_t committed() const;
    /// No later batch may commit in this session; wakes every waiter.
    void abort();
    [[nodiscard]] bool aborted() const;

    /// Batch `seq` executes on backend `pid` (0 to unregister).
    void executing(std::uint64_t seq, int pid);
    /// Backends executing batches numbered below `seq`.
    [[nodiscard]] std::vector<int> executing_before(std::uint64_t seq) const;

private:
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t committed_ = 0;      // guarded by mutex_
    bool aborted_ = false;             // guarded by mutex_
    std::map<std::uint64_t, int> pids_; // guarded by mutex_
};

} // namespace pgshift::apply
