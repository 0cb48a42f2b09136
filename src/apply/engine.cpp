// The apply engine: scheduler (batches, dependencies, hand-off) and the worker pool's lifecycle.
#include "pgshift/apply/engine.hpp"

#include "pgshift/apply/columns.hpp"

#include "pgshift/apply/origins.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace pgshift::apply {

namespace {

constexpr auto k_durable_interval = std::chrono::milliseconds(500);
/// Once apply has caught up (nothing queued, open or in flight for this long), the durable
/// watermark is read at once instead of at the next interval, so that the source learns
/// promptly that everything was applied. A steady load never pauses this long, so it costs no
/// extra WAL flushes there.
constexpr auto k_durable_when_quiet = std::chrono::milliseconds(20);
constexpr std::size_t k_batch_max_bytes = 8 << 20;
/// Source transactions per batch: at most 1,024 (and k_batch_max_bytes); with several workers, a
/// batch that can start at once is handed over at 64, so that a backlog spreads over the workers.
/// A chain of dependent batches runs one commit at a time, so its batch size sets how many round
/// trips a backlog costs: with 5 ms to the target, 1,024 instead of 256 took a 50,000-transaction
/// pgbench backlog from 7.1 s to 3.1 s (bench/catchup.sh through its delay proxy), with no change
/// without delay; 4,096 gained nothing more.
constexpr std::size_t k_batch_max_transactions_serial = 1024;
constexpr std::size_t k_batch_max_transactions_parallel = 64;
/// Past this many keys a batch is not tracked key by key: it becomes a barrier.
constexpr std::size_t k_max_batch_keys = 100000;
/// Entries of the key map kept before those of committed batches are pruned.
constexpr std::size_t k_prune_keys_at = 1 << 20;

[[noreturn]] void throw_target(const std::string& context, const pg::PgError& e)
{
    throw TargetError(context + ": " + e.what(), e.retryable(), e.violation());
}

/// The table a Relation message names.
TableName table_name_of(const std::string& payload, const protocol::DecodeContext& decode)
{
    const auto rel = std::get<protocol::Relation>(protocol::decode(payload, decode));
    return {rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname), std::string(rel.relname)};
}

/// Thrown out of scan() by a stop (or another batch's failure) while it waits for every earlier
/// batch to commit: not an error of its own.
struct Interrupted {};

} // namespace

/// Batches handed from the scheduler to the workers: a short deque (at most one per worker
/// waits in it), a mutex and two condition variables. Batch-sized, so not a hot path; the time
/// batches wait here is measured (Stats::wait_dispatch_micros).
/// Batches from the scheduler to the workers. A batch goes to `pending`, which any free worker
/// takes from, unless it continues a chain: when it must wait for the commit of the batch a
/// worker is running (or has queued), it goes to that worker's own queue. The worker then runs
/// it right after its commit, on the same thread and connection, instead of another worker
/// being woken for it: on a chain (pgbench's ten branch rows) that hand-off is all that
/// several workers add, and under CPU contention each one waits for a core.
struct Engine::Handoff {
    explicit Handoff(int workers)
        : own(static_cast<std::size_t>(workers)), tail(own.size(), 0), waiting(own.size(), false)
    {
    }

    std::mutex mutex;
    std::condition_variable work;  ///< a batch was added, or closed
    std::condition_variable taken; ///< a worker took a batch or became idle
    std::deque<std::unique_ptr<Batch>> pending; // guarded by mutex
    /// Per worker: at most one batch that continues its chain (guarded by mutex).
    std::vector<std::deque<std::unique_ptr<Batch>>> own;
    /// Per worker: the seq of the last batch it took from `pending` or was given (guarded by mutex).
    std::vector<std::uint64_t> tail;
    int idle = 0;                               // guarded by mutex: workers waiting in take()
    std::vector<bool> waiting;                  // guarded by mutex: per worker, asleep in take()
    int borrowed = -1;                          // guarded by mutex: the worker borrow() lent out
    bool closed = false;                        // guarded by mutex
    std::exception_ptr error;                   // guarded by mutex: the first worker error

    std::unique_ptr<Batch> take(std::size_t k)
    {
        std::unique_lock lk(mutex);
        if (own[k].empty()) {
            ++idle;
            waiting[k] = true;
            taken.notify_all();
            work.wait(lk, [&] {
                return closed || (borrowed != static_cast<int>(k) && (!pending.empty() || !own[k].empty()));
            });
            waiting[k] = false;
            --idle;
        }
        std::unique_ptr<Batch> b;
        if (!own[k].empty()) {
            b = std::move(own[k].front());
            own[k].pop_front();
        } else if (!pending.empty()) {
            b = std::move(pending.front());
            pending.pop_front();
            tail[k] = b->seq;
        } else {
            return nullptr;
        }
        taken.notify_all();
        return b;
    }
    /// The worker whose last batch is `seq`, or -1.
    int owner_of(std::uint64_t seq) const
    {
        for (std::size_t k = 0; k < tail.size(); ++k)
            if (tail[k] == seq)
                return static_cast<int>(k);
        return -1;
    }
    /// A worker asleep in take() with nothing queued, lent to the scheduler until give_back():
    /// its thread takes nothing meanwhile, so the scheduler may use the Worker itself. -1 when
    /// none is (or a batch waits to be taken).
    int borrow()
    {
        std::lock_guard lk(mutex);
        if (!pending.empty())
            return -1;
        for (std::size_t k = 0; k < waiting.size(); ++k)
            if (waiting[k] && own[k].empty()) {
                borrowed = static_cast<int>(k);
                return borrowed;
            }
        return -1;
    }
    void give_back()
    {
        std::lock_guard lk(mutex);
        borrowed = -1;
    }
    /// A worker is free for one more batch.
    bool worker_free()
    {
        std::lock_guard lk(mutex);
        return idle > static_cast<int>(pending.size());
    }
};

Engine::Engine(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats,
               Hold* hold)
    : cfg_(cfg), queue_(queue), progress_(progress), stats_(stats),
      workers_count_(std::clamp(cfg.apply.workers, 1, static_cast<int>(queue::Stats::k_max_workers))),
      handoff_(std::make_unique<Handoff>(workers_count_)), hold_(hold), table_names_(cfg.slot_name())
{
}

Engine::~Engine() = default;

Lsn Engine::connect()
{
    auto conninfo = pg::conninfo_with(cfg_.target.conninfo, {{"application_name", "pgshift_" + cfg_.name + "_apply"},
                                                             {"client_encoding", "UTF8"},
                                                             // format_type() then qualifies every type
                                                             // outside pg_catalog (resolve_relation)
                                                             {"options", std::string("-c search_path=pg_catalog ") +
                                                                             pg::k_no_timeouts + " " +
                                                                             pg::k_writable}});
    try {
        catalog_ = std::make_unique<pg::Connection>(conninfo);
        catalog_cancel_ = catalog_->canceller();
        pg::no_version_timeouts(*catalog_);
        // End backends a previous (crashed) run left behind, whatever its worker count, and wait
        // until they are gone: they hold our origins, and one may still be committing.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        for (;;) {
            auto r = catalog_->exec_params("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                                           "WHERE application_name ~ $1 AND pid <> pg_backend_pid()",
                                           {cfg_.origin_pattern()});
            if (r.rows() == 0)
                break;
            spdlog::warn("ended {} stale target session(s) of migration {}", r.rows(), cfg_.name);
            if (std::chrono::steady_clock::now() > deadline)
                throw TargetError("stale apply sessions of migration " + cfg_.name + " do not go away", true);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    } catch (const pg::PgError& e) {
        throw_target("target setup failed", e);
    }
    // Every replication origin that has progress keeps one of the target's replication state
    // slots, whose number is max_replication_slots: check before creating ours, rather than
    // fail later with "could not find free replication state slot".
    try {
        if (auto problem = origin_shortfall(*catalog_, cfg_, workers_count_))
            throw ConfigError(*problem);
    } catch (const pg::PgError& e) {
        throw_target("could not count replication origins", e);
    }
    // Read-only until ensure_origins(): a start that is refused leaves nothing behind.
    refresh_durable();
    return Lsn(progress_.durable.load());
}

namespace {
// flush = true: XLogFlush up to each origin's last commit, so this is a durable watermark
// (rule 3); commits are in source order, so the maximum is a prefix (rule 2).
constexpr const char* k_durable_query = "SELECT max(pg_replication_origin_progress(roname, true)) "
                                        "FROM pg_replication_origin WHERE roname ~ $1";
} // namespace

void Engine::take_durable(const pg::Result& r)
{
    if (!r.is_null(0, 0))
        if (auto l = Lsn::parse(r.get(0, 0)); l && l->value() > progress_.durable.load())
            progress_.durable.store(l->value());
    last_durable_check_ = std::chrono::steady_clock::now();
}

void Engine::refresh_durable()
{
    try {
        take_durable(catalog().exec_params(k_durable_query, {cfg_.origin_pattern()}));
    } catch (const pg::PgError& e) {
        throw_target("could not read origin progress", e);
    }
}

void Engine::poll_durable(bool behind, bool quiet)
{
    // The query (a WAL flush on the target) can take milliseconds on a busy server: the
    // scheduler sends it and collects the answer on a later pass instead of waiting.
    try {
        if (durable_pending_) {
            if (catalog_->result_ready())
                collect_durable();
        } else if (const auto since = std::chrono::steady_clock::now() - last_durable_check_;
                   behind && (since >= k_durable_interval || (quiet && since >= k_durable_when_quiet))) {
            catalog_->send_params(k_durable_query, {cfg_.origin_pattern()});
            durable_pending_ = true;
        }
    } catch (const pg::PgError& e) {
        durable_pending_ = false;
        throw_target("could not read origin progress", e);
    }
}

void Engine::collect_durable()
{
    durable_pending_ = false;
    try {
        take_durable(catalog_->result());
    } catch (const pg::PgError& e) {
        throw_target("could not read origin progress", e);
    }
}

pg::Connection& Engine::catalog()
{
    if (durable_pending_)
        collect_durable();
    return *catalog_;
}

void Engine::ensure_origins()
{
    for (int k = 0; k < workers_count_; ++k) {
        auto origin = cfg_.origin_name(k);
        try {
            if (catalog_->exec_params("SELECT pg_replication_origin_oid($1)", {origin}).is_null(0, 0)) {
                catalog_->exec_params("SELECT pg_replication_origin_create($1)", {origin});
                spdlog::info("created replication origin {} on the target", origin);
            }
        } catch (const pg::PgError& e) {
            throw_target("could not create replication origin " + origin, e);
        }
    }
}

void Engine::record_table_names(const Published& published, bool fresh)
{
    try {
        (void)table_names_.load(*catalog_, published, fresh);
    } catch (const pg::PgError& e) {
        throw_target("could not read the replicated tables' recorded names", e);
    }
}

void Engine::advance_origin(Lsn lsn)
{
    try {
        catalog_->exec_params("SELECT pg_replication_origin_advance($1, $2)", {cfg_.origin_name(0), lsn.str()});
    } catch (const pg::PgError& e) {
        throw_target("could not initialise origin " + cfg_.origin_name(0), e);
    }
    progress_.durable.store(lsn.value());
}

void Engine::begin_session(Lsn resume)
{
    resume_ = resume;
    context_ = std::make_unique<WorkerContext>(
        WorkerContext{cfg_, order_, progress_, stats_, resume, stopping_, cancelled_});
    stats_.workers.store(workers_count_);
    for (auto& s : stats_.worker_state)
        s.store(static_cast<std::uint8_t>(WorkerState::idle));
    for (int k = 0; k < workers_count_; ++k) {
        workers_.push_back(std::make_unique<Worker>(*context_, k));
        workers_.back()->connect();
    }
    progress_.durable.store(std::max(progress_.durable.load(), resume.value()));
    last_durable_check_ = std::chrono::steady_clock::now();
    spdlog::info("apply: {} worker(s), origins {}..{}, resume after {}", workers_count_, cfg_.origin_name(0),
                 cfg_.origin_name(workers_count_ - 1), resume.str());
}

bool Engine::scan(ScheduledTxn& st, std::vector<std::uint64_t>& keys, bool& relation_changed,
                  const std::atomic<bool>& stop)
{
    const auto& txn = *st.txn;
    const bool skip = txn.commit_lsn < resume_;
    const bool track = workers_count_ > 1;
    bool barrier = false;
    std::uint64_t change = 0;
    auto use = [&](RelId relid) -> const RelationInfo& {
        auto it = relations_.find(relid);
        if (it == relations_.end())
            throw ProtocolError("change for relation " + std::to_string(relid.value) +
                                " without a preceding Relation message in xid " + std::to_string(txn.xid.value));
        auto& known = it->second;
        if (!known.info) {
            try {
                follow_source_rename(known, stop);
                if (adds_columns()) {
                    const bool used_before = std::any_of(st.relations.begin(), st.relations.end(),
                                                         [&](const auto& r) { return r.relid == relid; });
                    follow_source_columns(known, used_before, stop);
                }
                known.info = resolve_relation(catalog(), known.payload, known.decode, ++generation_);
                table_names_.remember(catalog(), relid, table_name_of(known.payload, known.decode));
            } catch (const pg::PgError& e) {
                throw_target("while resolving a relation on the target", e);
            }
        }
        // Record where this transaction starts using this definition of the relation.
        bool recorded = false;
        for (auto r = st.relations.rbegin(); r != st.relations.rend(); ++r)
            if (r->relid == relid) {
                recorded = r->info == known.info;
                break;
            }
        if (!recorded)
            st.relations.push_back({change, relid, known.info});
        return *known.info;
    };
    auto cursor = txn.messages.cursor();
    std::string_view payload;
    while (cursor.next(payload)) {
        auto msg = protocol::decode(payload, txn.decode);
        if (auto* rel = std::get_if<protocol::Relation>(&msg)) {
            auto& known = relations_[rel->relid];
            if (known.payload != payload) {
                // A new definition of a relation in use: a barrier (rule 7), and the batch that
                // holds the old definition must be closed first.
                if (known.info)
                    relation_changed = true;
                known = Known{std::string(payload), txn.decode, nullptr};
            }
            continue;
        }
        if (skip)
            continue;
        if (auto* tr = std::get_if<protocol::Truncate>(&msg)) {
            for (auto relid : tr->relids)
                (void)use(relid);
            barrier = true;
            ++change;
        } else if (std::holds_alternative<protocol::Insert>(msg) || std::holds_alternative<protocol::Update>(msg) ||
                   std::holds_alternative<protocol::Delete>(msg)) {
            const auto& info = use(relid_of(msg));
            if (track && !barrier && !append_keys(msg, info, keys))
                barrier = true;
            if (keys.size() > k_max_batch_keys) {
                barrier = true; // too many to track: run it alone
                keys.clear();
            }
            ++change;
        }
    }
    return barrier || relation_changed;
}

void Engine::wait_for_earlier_batches(const std::atomic<bool>& stop)
{
    if (open_ && !open_->txns.empty())
        dispatch(stop);
    while (order_.committed() + 1 != next_seq_) {
        if (stop.load(std::memory_order_acquire) || order_.aborted())
            throw Interrupted{};
        std::unique_lock lk(handoff_->mutex);
        handoff_->taken.wait_for(lk, std::chrono::milliseconds(2));
    }
}

void Engine::follow_source_rename(const Known& known, const std::atomic<bool>& stop)
{
    const auto stream = table_name_of(known.payload, known.decode);
    const auto rel = std::get<protocol::Relation>(protocol::decode(known.payload, known.decode));
    const auto from = table_names_.renamed(rel.relid, stream);
    if (!from)
        return;
    // Every earlier change of the table was applied under its old name.
    wait_for_earlier_batches(stop);
    alter_target([&](pg::Connection& target) { table_names_.rename(target, rel.relid, *from, stream, adds_columns()); });
}

void Engine::alter_target(const std::function<void(pg::Connection&)>& change)
{
    struct Altering {
        std::atomic<bool>& flag;
        ~Altering() { flag.store(false, std::memory_order_release); }
    } altering{altering_};
    altering_.store(true, std::memory_order_release);
    if (cancelled_.load(std::memory_order_acquire))
        throw Interrupted{};
    try {
        change(catalog());
    } catch (const TargetError&) {
        if (cancelled_.load(std::memory_order_acquire))
            throw Interrupted{}; // the stop cancelled it: not an error
        throw;
    } catch (const pg::PgError&) {
        if (cancelled_.load(std::memory_order_acquire))
            throw Interrupted{};
        throw;
    }
}

void Engine::follow_source_columns(const Known& known, bool used_before, const std::atomic<bool>& stop)
{
    const auto rel = std::get<protocol::Relation>(protocol::decode(known.payload, known.decode));
    const std::string nsp = rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname);
    std::vector<std::string> names;
    std::vector<StreamColumn> stream;
    for (const auto& c : rel.columns) {
        names.emplace_back(c.name);
        stream.push_back({std::string(c.name), c.type_oid, c.type_modifier});
    }
    const auto qualified = pg::quote_ident(nsp) + "." + pg::quote_ident(rel.relname);
    const auto missing = missing_columns(catalog(), qualified, names);
    auto dropped = dropped_not_null(catalog(), qualified, names);
    auto widened = widened_columns(catalog(), qualified, stream);
    if (missing.empty() && dropped.empty() && widened.empty())
        return;
    const auto display = nsp + "." + std::string(rel.relname);
    // Every earlier transaction commits first: the target table then holds exactly the rows the
    // source table held before this transaction (what add_columns() decides on), and no batch
    // in flight writes rows under the old column list after the column's default is changed.
    wait_for_earlier_batches(stop);
    alter_target([&](pg::Connection& target) {
        if (!missing.empty()) {
            std::unique_ptr<pg::Connection> source;
            ColumnChanges changes;
            try {
                source = std::make_unique<pg::Connection>(pg::conninfo_with(
                    cfg_.source.conninfo, {{"application_name", "pgshift_" + cfg_.name + "_schema"}}));
                changes = table_names_.renamed_columns(*source, rel.relid, missing,
                                                       extra_columns(target, qualified, names));
            } catch (const pg::PgError& e) {
                throw SourceError(std::string("could not read the source's definition of a column the target "
                                              "lacks: ") + e.what(),
                                  e.retryable());
            }
            const auto& renames = changes.renamed;
            if (!renames.empty()) {
                // Renamed first: what is still missing then was added on the source, and the
                // renamed columns' rules (NOT NULL, a wider type) are compared under their names.
                table_names_.rename_columns(target, rel.relid, display, qualified, renames);
                dropped = dropped_not_null(target, qualified, names);
                widened = widened_columns(target, qualified, stream);
            }
            std::vector<NewColumn> columns;
            for (const auto& c : rel.columns)
                if (std::find(missing.begin(), missing.end(), c.name) != missing.end() &&
                    std::none_of(renames.begin(), renames.end(), [&](const auto& r) { return r.to == c.name; }))
                    columns.push_back({std::string(c.name), c.type_oid});
            if (!columns.empty()) {
                add_columns(*source, target, nsp, std::string(rel.relname), columns, used_before,
                            changes.others_dropped);
                std::vector<std::string> added;
                for (const auto& c : columns)
                    added.push_back(c.name);
                table_names_.remember_columns(*source, target, rel.relid, added);
            }
        }
        if (!dropped.empty())
            relax_dropped_columns(target, display, qualified, dropped);
        if (!widened.empty())
            widen_columns(target, display, qualified, widened);
    });
}

bool Engine::ready_to_dispatch(std::size_t enough) const
{
    if (!handoff_->worker_free())
        return false; // keep the batch open: it may grow until a worker is free
    // A batch that depends on one not committed yet could not start anyway: let it grow (fewer
    // commits) until that one committed, as a single worker would.
    if (order_.committed() < open_after_)
        return false;
    // Nothing more queued, or enough to be worth a commit of its own. A batch that depended on
    // an earlier one is part of a chain that runs one batch at a time anyway: it grows as a
    // single worker's would (fewer commits).
    if (open_after_ > 0)
        enough = std::max(enough, k_batch_max_transactions_serial);
    return queue_.entries() == 0 || open_->txns.size() >= enough;
}

void Engine::dispatch(const std::atomic<bool>& stop)
{
    auto batch = std::move(open_);
    batch->seq = next_seq_++;
    std::uint64_t after = last_barrier_;
    if (open_barrier_) {
        after = batch->seq - 1;
        last_barrier_ = batch->seq;
    } else {
        for (auto key : open_keys_) {
            auto [it, inserted] = last_writer_.try_emplace(key, batch->seq);
            if (!inserted) {
                after = std::max(after, it->second);
                it->second = batch->seq;
            }
        }
    }
    batch->after = std::min(after, batch->seq - 1);
    open_keys_.clear();
    open_barrier_ = false;
    open_after_ = 0;
    if (last_writer_.size() > k_prune_keys_at) {
        auto done = order_.committed();
        std::erase_if(last_writer_, [&](const auto& kv) { return kv.second <= done; });
    }
    batch->closed_at = std::chrono::steady_clock::now();
    stats_.batches_dispatched.fetch_add(1, std::memory_order_relaxed);
    // Nothing in flight (every earlier batch committed) and nothing queued: no worker could run
    // in parallel with this batch, so the scheduler applies it itself on an idle worker's
    // connection. The worker's thread is not woken: one hand-off fewer per transaction when
    // the target keeps up, which is most of a transaction's latency then. (The scheduler sees
    // the queue again right after: a backlog is dispatched to the pool as before.)
    // Only a batch too short to check for a stop request (Worker::k_stop_check_messages): the
    // scheduler, busy with it, would not pass a stop on to a long one.
    std::uint64_t messages = 0;
    for (const auto& st : batch->txns)
        messages += st.txn->messages.count();
    if (batch->seq == order_.committed() + 1 && queue_.entries() == 0 && messages < Worker::k_stop_check_messages) {
        if (const int k = handoff_->borrow(); k >= 0) {
            stats_.batches_inline.fetch_add(1, std::memory_order_relaxed);
            run_batch(*workers_[static_cast<std::size_t>(k)], *batch);
            handoff_->give_back();
            return;
        }
    }
    std::unique_lock lk(handoff_->mutex);
    // A batch that waits for the commit of the one just before it continues that one's worker
    // (see Handoff); one that waits for nothing uncommitted, or for an earlier batch, goes to
    // any free worker.
    const int owner = batch->after == batch->seq - 1 && batch->after > order_.committed()
                          ? handoff_->owner_of(batch->after)
                          : -1;
    // At most one waiting batch per worker: what is dispatched is out of the queue's byte bound.
    handoff_->taken.wait(lk, [&] {
        return stop.load() || order_.aborted() ||
               (owner >= 0 ? handoff_->own[static_cast<std::size_t>(owner)].empty()
                           : static_cast<int>(handoff_->pending.size()) < std::max(1, handoff_->idle));
    });
    if (owner >= 0) {
        handoff_->tail[static_cast<std::size_t>(owner)] = batch->seq;
        handoff_->own[static_cast<std::size_t>(owner)].push_back(std::move(batch));
        stats_.batches_chained.fetch_add(1, std::memory_order_relaxed);
        handoff_->work.notify_all(); // the owner, whichever waiter notify_one would pick
    } else {
        handoff_->pending.push_back(std::move(batch));
        handoff_->work.notify_one();
    }
}

void Engine::run_batch(Worker& w, Batch& batch)
{
    try {
        w.process(batch);
    } catch (...) {
        {
            std::lock_guard lk(handoff_->mutex);
            if (!handoff_->error)
                handoff_->error = std::current_exception();
        }
        order_.abort();
        w.abandon();
    }
    // A stop or an error rolled back this batch: the ones after it cannot commit either.
    if (order_.aborted())
        w.abandon();
}

void Engine::worker_main(Worker& w)
{
    while (auto batch = handoff_->take(static_cast<std::size_t>(w.index())))
        run_batch(w, *batch);
    w.set_state(WorkerState::idle);
}

std::size_t Engine::cancel_statements()
{
    // Before any request goes out, so that the worker sees the error as the stop it is.
    cancelled_.store(true, std::memory_order_release);
    std::size_t sent = 0;
    // workers_ was filled by begin_session() before run() started, and stays as it is until
    // the engine is destroyed: reading it from this thread is safe.
    for (const auto& w : workers_) {
        const auto k = static_cast<std::size_t>(w->index());
        if (k < stats_.worker_state.size() &&
            stats_.worker_state[k].load(std::memory_order_relaxed) == static_cast<std::uint8_t>(WorkerState::idle))
            continue;
        if (auto why = w->cancel_statement(); why.empty())
            ++sent;
        else
            spdlog::warn("apply: could not cancel the statement of worker {}: {}", w->index(), why);
    }
    // A column being added may wait for a lock on the target table (follow_source_columns).
    if (altering_.load(std::memory_order_acquire) && catalog_cancel_) {
        if (auto why = catalog_cancel_->cancel(); why.empty())
            ++sent;
        else
            spdlog::warn("apply: could not cancel the schema change on the target: {}", why);
    }
    return sent;
}

void Engine::run(const std::atomic<bool>& stop, const std::atomic<bool>& paused)
{
    const std::size_t max_txns =
        workers_count_ == 1 ? k_batch_max_transactions_serial : k_batch_max_transactions_parallel;
    std::vector<std::thread> threads;
    for (auto& w : workers_)
        threads.emplace_back([this, &w] { worker_main(*w); });

    std::exception_ptr error;
    std::vector<std::uint64_t> keys;
    try {
        while (!stop.load(std::memory_order_acquire) && !order_.aborted()) {
            const bool behind = progress_.durable.load() < progress_.written_end.load();
            const bool settled = (!open_ || open_->txns.empty()) && order_.committed() + 1 == next_seq_;
            poll_durable(behind, settled && std::chrono::steady_clock::now() - last_received_ >= k_durable_when_quiet);
            if (paused.load(std::memory_order_acquire)) {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                continue;
            }
            bool open_empty = !open_ || open_->txns.empty();
            const std::uint64_t hold_at = hold_ ? hold_->at.load(std::memory_order_acquire) : 0;
            std::unique_ptr<queue::Transaction> txn;
            if (held_ && (hold_at == 0 || held_->commit_lsn.value() < hold_at)) {
                txn = std::move(held_); // the hold was cleared
            } else if (held_) {
                // Holding: everything before the held transaction goes out and commits.
                // (It cannot grow any more: dispatch it as soon as it could start.)
                if (!open_empty && handoff_->worker_free() && order_.committed() >= open_after_)
                    dispatch(stop);
                else if (open_empty && order_.committed() + 1 == next_seq_)
                    hold_->reached.store(hold_at, std::memory_order_release);
                std::unique_lock lk(handoff_->mutex);
                handoff_->taken.wait_for(lk, std::chrono::milliseconds(2));
                continue;
            } else {
                // With nothing open, wait for the queue, but while the watermark is behind, wake up
                // in time to read it once quiet.
                const auto wait = !open_empty                                              ? std::chrono::milliseconds(0)
                                  : progress_.durable.load() < progress_.written_end.load() ? k_durable_when_quiet
                                                                                            : std::chrono::milliseconds(100);
                txn = queue_.pop(wait);
                if (txn)
                    last_received_ = std::chrono::steady_clock::now();
                // Read again: the pop may have waited, and the hold may have been set meanwhile.
                const std::uint64_t now_at = hold_ ? hold_->at.load(std::memory_order_acquire) : 0;
                if (txn && now_at != 0 && txn->commit_lsn.value() >= now_at) {
                    spdlog::debug("apply: holding at {}: transaction {} (commit {}) waits", Lsn(now_at).str(),
                                  txn->xid.value, txn->commit_lsn.str());
                    held_ = std::move(txn);
                    continue;
                }
            }
            if (txn) {
                ScheduledTxn st{std::move(txn), {}};
                keys.clear();
                bool relation_changed = false;
                bool barrier = scan(st, keys, relation_changed, stop);
                // (scan may have dispatched the open batch itself: see follow_source_columns)
                if (open_ && !open_->txns.empty() && relation_changed)
                    dispatch(stop);
                if (!open_) {
                    open_ = std::make_unique<Batch>();
                    open_barrier_ = false;
                }
                open_->bytes += st.txn->bytes;
                open_->txns.push_back(std::move(st));
                for (auto key : keys)
                    if (auto it = last_writer_.find(key); it != last_writer_.end())
                        open_after_ = std::max(open_after_, it->second);
                open_keys_.insert(open_keys_.end(), keys.begin(), keys.end());
                open_barrier_ = open_barrier_ || barrier || open_keys_.size() > k_max_batch_keys;
                if (open_barrier_) {
                    open_keys_.clear();
                    open_after_ = next_seq_ - 1;
                }
                if (open_->txns.size() >= k_batch_max_transactions_serial || open_->bytes >= k_batch_max_bytes)
                    dispatch(stop);
                else if (ready_to_dispatch(max_txns))
                    dispatch(stop);
                continue;
            }
            if (!open_ || open_->txns.empty())
                continue;
            if (ready_to_dispatch(0)) {
                dispatch(stop);
            } else {
                // Every worker is busy: keep the batch open (it may grow) until one is free.
                std::unique_lock lk(handoff_->mutex);
                handoff_->taken.wait_for(lk, std::chrono::milliseconds(2));
            }
        }
    } catch (const Interrupted&) {
        // A stop (or a failed batch, whose error handoff_ holds) while waiting for commits.
    } catch (...) {
        error = std::current_exception();
        order_.abort();
    }
    // What was not dispatched is dropped (received again after a restart); what was dispatched
    // finishes in order, unless a stop rolls back a long transaction or a worker failed.
    stopping_.store(true);
    open_.reset();
    {
        std::lock_guard lk(handoff_->mutex);
        handoff_->closed = true;
    }
    handoff_->work.notify_all();
    for (auto& t : threads)
        t.join();
    {
        std::lock_guard lk(handoff_->mutex);
        if (!error)
            error = handoff_->error;
    }
    if (error)
        std::rethrow_exception(error);
    refresh_durable();
}

} // namespace pgshift::apply
