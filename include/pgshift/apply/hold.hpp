// A hold point for apply: "apply everything that committed before LSN X, then stop there", so
// that another component (verify) can read the target at exactly the source's state at X.
//
// Design notes
// - Owned by the daemon (it outlives sessions); the scheduler of the current session reads it.
//   The requester sets `at`, waits until `reached` equals it, reads what it needs, then clears
//   `at`. It may move `at` forward while holding (from a provisional point to the real one):
//   `reached` names the point it refers to, so a stale "reached" is never taken for the new one.
// - Reached means: a transaction with commit_lsn >= at has been received and held back (so
//   every earlier one has been received: the stream is in commit order), and every batch
//   dispatched before it has committed. The requester makes sure such a transaction comes (a
//   transactional logical message written after X).
// - One requester at a time (verify, a switch's drain, the schema follower's detach of a
//   partition): each holds `owner` from setting `at` until it cleared it.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

namespace pgshift::apply {

struct Hold {
    std::atomic<std::uint64_t> at{0};      ///< 0: no hold
    std::atomic<std::uint64_t> reached{0}; ///< the hold point last reached (the scheduler sets it)
    std::mutex owner;                      ///< held by the one requester using `at`
};

} // namespace pgshift::apply
