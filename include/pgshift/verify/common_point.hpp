// One point X of the source's stream at which both servers show the same rows: the source in a
// snapshot exported at X, the target while apply holds right after everything that committed
// before X. Verify compares the servers there; the schema follower detaches a partition the
// source dropped there (a retention job), where the target's rows of it are exactly the dropped
// ones.
//
// Design notes
// - X is a temporary logical slot's consistent point, and the slot exports the snapshot that
//   shows the source at X. Apply must not pass X while the slot is made: it is held at the
//   source's current WAL position first (<= X) and the hold moved to X once X is known.
// - reach(): a transactional logical message written after X makes a transaction with commit
//   LSN >= X come down the stream, so apply learns when everything before X arrived; it applies
//   that, holds, and says so (apply::Hold). The caller does its part on the target, then the
//   hold ends (release(), or the destructor whatever happens).
// - One user of the hold at a time: the caller passes the lock of Hold::owner.
#pragma once

#include "pgshift/apply/hold.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/pg/connection.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

namespace pgshift::pg {
class ReplicationConnection;
}

namespace pgshift::verify {

class CommonPoint {
public:
    /// Holds apply, then makes the temporary slot `slot` on the source (`conninfo`, sessions
    /// named `app`) and exports its snapshot. `owner` holds `hold.owner`. Throws PgError or
    /// runtime_error.
    CommonPoint(const std::string& conninfo, const std::string& app, const std::string& slot, apply::Hold& hold,
                std::unique_lock<std::mutex> owner);
    ~CommonPoint();
    CommonPoint(const CommonPoint&) = delete;
    CommonPoint& operator=(const CommonPoint&) = delete;

    [[nodiscard]] Lsn at() const { return at_; }
    /// Opens a REPEATABLE READ READ ONLY transaction on `c` that sees the source at X (until
    /// end_export()). Throws PgError.
    void import(pg::Connection& c) const;
    /// Drops the temporary slot (its snapshot can no longer be imported).
    void end_export();
    /// Marks X in the stream and waits until apply committed everything before it and holds.
    /// Throws runtime_error when `stop` is set or after `timeout` (apply paused, failed or far
    /// behind), PgError when the mark cannot be written.
    void reach(const std::atomic<bool>& stop, std::chrono::milliseconds timeout, const std::string& why_stopped);
    /// Apply goes on (idempotent).
    void release();

private:
    std::string conninfo_, app_;
    apply::Hold& hold_;
    std::unique_lock<std::mutex> owner_;
    std::unique_ptr<pg::ReplicationConnection> repl_;
    Lsn at_;
    std::string snapshot_;
};

} // namespace pgshift::verify
