// An apply worker: one target connection with its own replication origin, replaying batches of
// consecutive source transactions, each as one target transaction, committed in source order.
//
// Design notes
// - Owned by its worker thread (Engine starts N of them). Exactly-once per ARCHITECTURE rules
//   1-4: the session is bound to origin pgshift_<name>_w<k>; every batch forces an xid and
//   calls pg_replication_origin_xact_setup(end_lsn of its last transaction) before COMMIT, so
//   the origin's progress commits atomically with the rows.
// - A batch goes: wait for the batch it depends on (rule 5) -> execute through one pipeline
//   (BEGIN, xid, statements, xact_setup; every result checked) -> wait for its turn at the
//   commit gate (rule 2) -> COMMIT -> report. A unique violation, exclusion violation or
//   deadlock while executing means a conflict the keys did not see: roll back, wait until every
//   earlier batch committed, run again. While waiting at the gate, a worker checks whether an
//   earlier batch's backend waits for one of its locks (pg_blocking_pids): if so it rolls back
//   and runs again after it (the watchdog of rule 5).
// - A batch's changes are compacted to each row's net effect (compaction.hpp) and written as
//   multi-row statements or COPY (writer.hpp). A compacted batch that hits a unique or
//   exclusion violation, a deadlock or a missing row is rolled back and replayed in source
//   order, uncompacted, once every earlier batch committed: transient states can differ.
// - Statements are prepared per worker connection, cached per (relation generation, shape).
// - Messages are read from each transaction's MessageLog (memory or spill file) one at a time,
//   so a batch of any size takes bounded memory.
#pragma once

#include "pgshift/apply/commit_order.hpp"
#include "pgshift/apply/compaction.hpp"
#include "pgshift/apply/relations.hpp"
#include "pgshift/apply/writer.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/pg/pipeline.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/transaction.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgshift::apply {

/// What a worker does now (status and metrics).
enum class WorkerState : std::uint8_t { idle, waiting_dependency, executing, waiting_commit };
inline constexpr std::array<const char*, 4> k_worker_states = {"idle", "waiting_dependency", "executing",
                                                               "waiting_commit"};

/// A relation a transaction's change number `change` (and the following ones) uses.
struct RelationUse {
    std::uint64_t change = 0;
    RelId relid;
    std::shared_ptr<const RelationInfo> info;
};

struct ScheduledTxn {
    std::unique_ptr<queue::Transaction> txn;
    std::vector<RelationUse> relations; ///< in change order; only where a relid's info starts
};

/// Consecutive source transactions committed as one target transaction.
struct Batch {
    std::uint64_t seq = 0;   ///< 1, 2, ... in source order (CommitOrder)
    std::uint64_t after = 0; ///< may start executing once this batch committed
    std::vector<ScheduledTxn> txns;
    std::size_t bytes = 0;
    std::chrono::steady_clock::time_point closed_at;
};

/// What every worker of a session shares.
struct WorkerContext {
    const config::Config& cfg;
    CommitOrder& order;
    queue::Progress& progress;
    queue::Stats& stats;
    Lsn resume;                    ///< transactions with commit_lsn below this are skipped (rule 4)
    const std::atomic<bool>& stop; ///< a stop request: long transactions are rolled back
    /// Set (before the cancel requests go out) when a stop cancelled the workers' statements
    /// (Engine::cancel_statements): an error "canceling statement due to user request" is then
    /// the stop, not a failure.
    const std::atomic<bool>& cancelled;
};

class Worker {
public:
    Worker(WorkerContext& ctx, int index);

    /// Connects, binds the origin session (the origin exists: Engine::ensure_origins).
    void connect();
    /// Applies one batch through the gate. Returns false when the session is aborted (the batch
    /// was rolled back or never started). Throws TargetError / ProtocolError on errors.
    bool process(Batch& batch);
    /// Rolls back whatever transaction is open (after an exception), quietly.
    void abandon() noexcept;

    /// Asks the target to cancel the statement this worker's connection runs now (PQcancel).
    /// Called from the thread that stops the session while the worker may be blocked on the
    /// connection (a lock held by another session); the worker then rolls back and returns as
    /// for a stop. Returns "" when the request was sent, else why not. The handle it uses is
    /// made by connect(), before the worker thread starts, and never replaced afterwards.
    [[nodiscard]] std::string cancel_statement() const;

    /// A batch checks for a stop request (WorkerContext::stop) every this many messages: a long
    /// transaction is rolled back on stop instead of finished.
    static constexpr std::uint64_t k_stop_check_messages = 4096;

    [[nodiscard]] int index() const { return index_; }
    [[nodiscard]] const std::string& origin() const { return origin_; }
    void set_state(WorkerState s);

private:
    /// written: executed, the transaction open for COMMIT; committed: executed and committed in
    /// the same round trip; conflict: a unique violation or deadlock; fallback: the compacted
    /// batch failed (run it again uncompacted); unpipelined: the attempt with COMMIT in the
    /// pipeline failed and was rolled back (run it again without, to learn and handle why).
    enum class Outcome { empty, written, committed, conflict, fallback, unpipelined };
    struct Counts {
        std::uint64_t inserts = 0, updates = 0, deletes = 0, truncates = 0;
        std::uint64_t statements = 0, rows = 0; ///< sent to the target
    };
    /// Sends the batch (compacted or not) and checks every result, leaving the transaction
    /// open for COMMIT; with `commit` (only when every earlier batch committed), sends COMMIT
    /// in the same round trip, its statements guarded (Writer::set_guard()).
    Outcome execute(const Batch& batch, bool serial, bool compact, bool commit, Counts& counts);
    void execute_txn(pg::Pipeline& pl, const ScheduledTxn& st, Compactor* compactor, bool& began, Counts& counts);
    void send_change(pg::Pipeline& pl, const queue::Transaction& txn, const protocol::Message& msg,
                     const std::unordered_map<RelId, const RelationInfo*>& rels, Compactor* compactor, bool& began,
                     Counts& counts);
    /// Keeps a table whose compacted batch failed in source order for a while.
    static void pause_compaction(const void* rel);
    /// Hands what the compactor released to the writer.
    void drain(pg::Pipeline& pl);
    void rollback(pg::Pipeline& pl);
    /// Waits for its turn at the gate; false when aborted. `pl` is the open transaction (for
    /// the watchdog); sets `blocking` when an earlier batch waits for one of our locks.
    bool wait_turn(const Batch& batch, bool written, bool& blocking);
    [[nodiscard]] std::string describe(const pg::Pipeline::Failure& f) const;
    /// Whether an error with `sqlstate` is the cancel of a stop (cancel_statement()).
    [[nodiscard]] bool cancelled_by_stop(const std::string& sqlstate) const;
    /// After such a cancel: no later batch may commit; logs it. The caller then unwinds as for
    /// a stop (Interrupted, or returns false from process()).
    void note_cancel(const char* where);

    WorkerContext& ctx_;
    int index_;
    std::string origin_;
    std::unique_ptr<pg::Connection> conn_;
    std::unique_ptr<pg::Canceller> canceller_; ///< for conn_; see cancel_statement()
    Writer writer_;
    std::string setup_name_; ///< the prepared origin/xid statement that ends every batch ("": none)
    std::uint64_t setup_counter_ = 0;
    std::vector<const char*> setup_values_;
    std::vector<RowOp> released_; ///< operations the compactor released, for the writer
    /// Thrown when a stop request rolled the transaction back.
    struct Interrupted {};
};

} // namespace pgshift::apply
