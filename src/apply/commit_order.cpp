// The commit gate (see commit_order.hpp).
#include "pgshift/apply/commit_order.hpp"

#include "pgshift/common/errors.hpp"

namespace pgshift::apply {

CommitOrder::Wait CommitOrder::wait_committed(std::uint64_t seq, std::chrono::milliseconds timeout)
{
    std::unique_lock lk(mutex_);
    bool done = cv_.wait_for(lk, timeout, [&] { return aborted_ || committed_ >= seq; });
    if (aborted_)
        return Wait::aborted;
    return done ? Wait::ready : Wait::timeout;
}

void CommitOrder::committed(std::uint64_t seq)
{
    {
        std::lock_guard lk(mutex_);
        if (seq != committed_ + 1)
            throw InternalError("commit order broken: batch " + std::to_string(seq) + " committed after " +
                                std::to_string(committed_));
        committed_ = seq;
        pids_.erase(seq);
    }
    cv_.notify_all();
}

std::uint64_t CommitOrder::committed() const
{
    std::lock_guard lk(mutex_);
    return committed_;
}

void CommitOrder::abort()
{
    {
        std::lock_guard lk(mutex_);
        aborted_ = true;
    }
    cv_.notify_all();
}

bool CommitOrder::aborted() const
{
    std::lock_guard lk(mutex_);
    return aborted_;
}

void CommitOrder::executing(std::uint64_t seq, int pid)
{
    std::lock_guard lk(mutex_);
    if (pid)
        pids_[seq] = pid;
    else
        pids_.erase(seq);
}

std::vector<int> CommitOrder::executing_before(std::uint64_t seq) const
{
    std::lock_guard lk(mutex_);
    std::vector<int> out;
    for (auto it = pids_.begin(); it != pids_.end() && it->first < seq; ++it)
        out.push_back(it->second);
    return out;
}

} // namespace pgshift::apply
