// The apply side: a scheduler that turns queued source transactions into batches with
// dependencies, and a pool of workers that execute them in parallel and commit them in order.
//
// Design notes
// - Threads: run() is the scheduler, on the thread that calls it (the session's apply thread);
//   it starts apply.workers worker threads (Worker, one target connection each) and joins them
//   before it returns. The scheduler also owns one plain target connection for the catalog
//   (resolving relations and unique indexes) and for the durable watermark.
// - When nothing is in flight and nothing queued (the target keeps up), the scheduler applies a
//   batch itself, on the connection of a worker asleep in the hand-off (Handoff::borrow()):
//   the worker's thread is not woken, one hand-off fewer in each transaction's latency.
// - Batching: the scheduler keeps one open batch and adds queued transactions to it while no
//   worker is free or while the batch it depends on has not committed (up to 1,024 transactions
//   or 8 MiB), and hands it over as soon as it could start: with one worker this is the grouping
//   of consecutive transactions into one target transaction; with several, independent batches
//   are as small as the workers are fast (64 when more is queued), and a chain of dependent
//   batches grows as a single worker's would.
// - Dependencies (rule 5): every row change yields conflict keys (relations.hpp). A batch's
//   `after` is the newest earlier batch sharing a key; it executes only once that one
//   committed. TRUNCATE, a changed Relation message, a change that cannot be keyed and a batch
//   with too many keys to track are barriers: they wait for everything before them, and
//   everything after waits for them. With one worker, keys are not computed at all.
// - Relations: each transaction carries the RelationInfo its changes use, resolved when the
//   scheduler first meets them, so workers never query the catalog and never see a definition
//   newer than the one their transaction was decoded with.
// - Progress (rule 3): batches commit in order (CommitOrder), so the durable watermark is the
//   maximum of the workers' flushed origin progress, read by the scheduler every 500 ms without
//   waiting for the answer (the query flushes the target's WAL, which can take milliseconds).
//   Resume (rule 4) starts from the maximum over every pgshift_<name>_w<k> origin, whatever the
//   worker count of earlier runs.
// - Pause stops dispatching; in-flight batches finish. Stop does the same and then joins.
// - Hold (hold.hpp, for verify): a transaction committing at or after the hold point is kept
//   back (the open batch before it is dispatched) until the hold is cleared.
#pragma once

#include "pgshift/apply/commit_order.hpp"
#include "pgshift/apply/hold.hpp"
#include "pgshift/apply/relations.hpp"
#include "pgshift/apply/table_names.hpp"
#include "pgshift/apply/worker.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgshift::apply {

class Engine {
public:
    Engine(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats,
           Hold* hold = nullptr);
    ~Engine();

    /// Connects the catalog connection and ends stale sessions of our origins (no other side
    /// effect). Returns the durable progress: the maximum over every origin of this migration.
    Lsn connect();
    [[nodiscard]] int server_version() const { return catalog_ ? catalog_->server_version() : 0; }
    /// Creates the workers' origins that do not exist yet (after every check passed).
    void ensure_origins();
    /// Records the target's name of each published source table and column not recorded yet, so
    /// that a rename on the source is followed (table_names.hpp; after ensure_origins()); `fresh`: the
    /// slot is about to be created.
    void record_table_names(const Published& published, bool fresh);
    /// Initialises worker 0's origin (first start only, before begin_session).
    void advance_origin(Lsn lsn);
    /// Connects the workers and binds their origins; transactions with commit_lsn < `resume`
    /// are skipped.
    void begin_session(Lsn resume);
    /// Schedules and applies queued transactions until `stop` is set; then lets in-flight
    /// batches finish and records the final durable position. While `paused` is set nothing
    /// new is dispatched. Rethrows the first worker error.
    void run(const std::atomic<bool>& stop, const std::atomic<bool>& paused);
    /// For a stop that run() has not finished after a while (a worker blocked on a lock another
    /// session holds on the target): asks the target to cancel the statement of every worker
    /// that is not idle (PQcancel). Each cancelled worker rolls back and ends as for a stop, no
    /// later batch commits, and run() returns without an error; the rolled-back transactions
    /// are received again at the next start. Called from another thread than run()'s (the
    /// session's owner), after `stop` was set. Returns the number of cancel requests sent.
    std::size_t cancel_statements();

private:
    struct Scheduled; // a transaction being added to the open batch
    /// Reads the durable watermark now (catalog connection).
    void refresh_durable();
    /// The same without waiting: sends the query when `behind` and due (every 500 ms, or at
    /// once when apply is `quiet`: caught up), or collects its answer when it has arrived.
    void poll_durable(bool behind, bool quiet);
    void take_durable(const pg::Result& r);
    /// Reads the answer poll_durable() awaits (waiting for it if needed).
    void collect_durable();
    /// The catalog connection, free for a query (an answer poll_durable() awaits is collected).
    pg::Connection& catalog();
    /// Scans a transaction: registers its Relation messages, resolves the relations its changes
    /// use, collects its conflict keys. Returns whether it must be a barrier.
    bool scan(ScheduledTxn& st, std::vector<std::uint64_t>& keys, bool& relation_changed,
              const std::atomic<bool>& stop);
    /// `schema: copy` (in both directions, with or without the initial copy): columns added on
    /// the source are added on the target (columns.hpp); `schema: verify` leaves the target's
    /// schema to the operator.
    [[nodiscard]] bool adds_columns() const { return cfg_.schema == config::SchemaMode::copy; }
    /// Whether the open batch should go now: a worker is free, the batch it depends on has
    /// committed, and nothing more is queued or it holds `enough` transactions.
    [[nodiscard]] bool ready_to_dispatch(std::size_t enough) const;
    /// Hands the open batch to a worker (waits for a free one).
    void dispatch(const std::atomic<bool>& stop);
    void worker_main(Worker& w);
    /// Runs one batch on `w`; a failure is kept for run() to rethrow and stops every later batch.
    void run_batch(Worker& w, Batch& batch);

    const config::Config& cfg_;
    queue::TxnQueue& queue_;
    queue::Progress& progress_;
    queue::Stats& stats_;
    int workers_count_;
    std::unique_ptr<pg::Connection> catalog_;
    std::unique_ptr<pg::Canceller> catalog_cancel_; ///< made by connect()
    std::atomic<bool> altering_{false};              ///< follow_source_columns() or _rename() runs its ALTER
    CommitOrder order_;
    Lsn resume_;
    std::atomic<bool> stopping_{false}; ///< long transactions are rolled back (set by run() on stop)
    std::atomic<bool> cancelled_{false}; ///< cancel_statements() was called
    std::unique_ptr<WorkerContext> context_;
    std::vector<std::unique_ptr<Worker>> workers_;

    /// The latest Relation message of each relid and, once a change used it, its resolution.
    struct Known {
        std::string payload;
        protocol::DecodeContext decode;
        std::shared_ptr<const RelationInfo> info; ///< null until a change uses it
    };
    std::unordered_map<RelId, Known> relations_;
    /// Before `known` is first resolved: when it names the table otherwise than the target's
    /// record (table_names.hpp), renames the target's table (schema: copy) or stops with the
    /// statement, once every earlier batch has committed.
    void follow_source_rename(const Known& known, const std::atomic<bool>& stop);
    /// Before `known` is first resolved, with schema: copy: adds the columns the target lacks,
    /// makes nullable the NOT NULL ones the source dropped and widens the ones the source widened
    /// (columns.hpp), once every earlier batch has committed.
    /// `used_before`: the transaction being scanned changed the table under an older definition.
    void follow_source_columns(const Known& known, bool used_before, const std::atomic<bool>& stop);
    /// Dispatches the open batch and waits until every batch has committed (for a change of the
    /// target's schema that apply must see whole); Interrupted on a stop.
    void wait_for_earlier_batches(const std::atomic<bool>& stop);
    /// Runs `change` on the catalog connection as a change of the target's schema that a stop
    /// may cancel (cancel_statements()): a failure after the cancel is Interrupted, not an error.
    void alter_target(const std::function<void(pg::Connection&)>& change);
    std::uint64_t generation_ = 0;

    // Dependency tracking (scheduler thread only).
    std::unordered_map<std::uint64_t, std::uint64_t> last_writer_; ///< key -> newest batch seq
    std::uint64_t last_barrier_ = 0;
    std::uint64_t next_seq_ = 1;
    std::unique_ptr<Batch> open_;
    std::vector<std::uint64_t> open_keys_;
    bool open_barrier_ = false;
    std::uint64_t open_after_ = 0; ///< the batch the open one depends on (so far)

    // Hand-off to workers.
    struct Handoff;
    std::unique_ptr<Handoff> handoff_;
    Hold* hold_ = nullptr;
    TableNames table_names_; ///< the target's name of each source relation (renames on the source)
    std::unique_ptr<queue::Transaction> held_; ///< received at or after the hold point
    std::chrono::steady_clock::time_point last_durable_check_;
    bool durable_pending_ = false; ///< poll_durable() sent the query, its answer is not read yet
    std::chrono::steady_clock::time_point last_received_; ///< the last transaction taken from the queue
};

} // namespace pgshift::apply
