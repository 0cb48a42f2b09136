// Apply worker: executes batches on its own target connection, commits them through the gate.
#include "pgshift/apply/worker.hpp"

#include "pgshift/common/clock.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <cstring>

namespace pgshift::apply {

namespace {

/// Session settings of rule 8, as libpq `options`, and pg::k_no_timeouts, k_writable, k_all_rows.
/// Read committed whatever the database's default: commit order is pgshift's to keep (rule 2),
/// and under a SERIALIZABLE default concurrent workers would fail each other's transactions on
/// predicate locks, to be retried over and over (the backslash keeps the value's space in options).
const std::string k_session_options = std::string("-c session_replication_role=replica -c synchronous_commit=off "
                                                  "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
                                                  "-c TimeZone=UTC -c search_path=pg_catalog "
                                                  "-c default_transaction_isolation=read\\ committed ") +
                                      pg::k_no_timeouts + " " + pg::k_writable + " " + pg::k_all_rows;
/// How long a worker waits at the gate before its watchdog looks for earlier batches blocked
/// by its locks, and how often it looks again.
constexpr auto k_watchdog_after = std::chrono::milliseconds(200);
constexpr auto k_gate_poll = std::chrono::milliseconds(50);
/// Row data the compactor may hold before it releases what it gathered (bounded memory).
constexpr std::size_t k_compact_max_bytes = 16u << 20;
/// How long a table whose compacted batch failed is kept in source order.
constexpr auto k_compaction_pause = std::chrono::seconds(10);

std::string change_context(const queue::Transaction& txn)
{
    return "while applying xid " + std::to_string(txn.xid.value) + " (commit " + txn.commit_lsn.str() + ")";
}

/// query_canceled: what the server answers a cancel request with (Worker::cancel_statement()).
constexpr const char* k_query_canceled = "57014";

/// Errors that mean "a conflict the keys did not see": retried once every earlier batch committed.
bool conflict_sqlstate(const std::string& s)
{
    return s == "23505" || s == "23P01" || s == "40P01" || s == "40001";
}

std::uint64_t micros_since(std::chrono::steady_clock::time_point t)
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t).count());
}

} // namespace

Worker::Worker(WorkerContext& ctx, int index) : ctx_(ctx), index_(index), origin_(ctx.cfg.origin_name(index)) {}

void Worker::set_state(WorkerState s)
{
    if (static_cast<std::size_t>(index_) < ctx_.stats.worker_state.size())
        ctx_.stats.worker_state[static_cast<std::size_t>(index_)].store(static_cast<std::uint8_t>(s),
                                                                         std::memory_order_relaxed);
}

void Worker::connect()
{
    auto conninfo = pg::conninfo_with(ctx_.cfg.target.conninfo, {{"application_name", origin_},
                                                                 {"options", k_session_options},
                                                                 {"client_encoding", "UTF8"}});
    try {
        conn_ = std::make_unique<pg::Connection>(conninfo);
        pg::no_version_timeouts(*conn_);
        canceller_ = conn_->canceller();
        writer_.forget_prepared();
        setup_name_.clear();
        conn_->exec_params("SELECT pg_replication_origin_session_setup($1)", {origin_});
        const auto rtt = conn_->round_trip();
        writer_.set_round_trip(rtt);
        spdlog::debug("worker {}: round trip to the target {} µs; inserts of {} rows or more go as COPY", index_,
                      rtt.count(), writer_.copy_min_rows());
    } catch (const pg::PgError& e) {
        throw TargetError("worker " + std::to_string(index_) + ": could not set up replication origin " + origin_ +
                              ": " + e.what(),
                          e.retryable());
    }
}

std::string Worker::cancel_statement() const
{
    return canceller_ ? canceller_->cancel() : "not connected";
}

bool Worker::cancelled_by_stop(const std::string& sqlstate) const
{
    return sqlstate == k_query_canceled && ctx_.cancelled.load(std::memory_order_acquire);
}

void Worker::note_cancel(const char* where)
{
    // No later batch may commit; this one's transaction is rolled back (here or by abandon()):
    // nothing of it is committed, its origin progress neither, so the next start receives it
    // again.
    ctx_.order.abort();
    spdlog::info("worker {}: stop: its target statement ({}) was cancelled; the transaction is rolled back and "
                 "applied again at the next start",
                 index_, where);
}

std::string Worker::describe(const pg::Pipeline::Failure& f) const
{
    const auto* rel = static_cast<const RelationInfo*>(f.at.rel);
    const auto* txn = static_cast<const queue::Transaction*>(f.at.txn);
    return std::string(f.at.op) + (rel ? " on " + rel->mapping.source_name : "") + ": " + f.message +
           (txn ? " " + change_context(*txn) : "");
}

void Worker::abandon() noexcept
{
    try {
        if (conn_ && conn_->is_ok()) {
            if (PQpipelineStatus(conn_->raw()) != PQ_PIPELINE_OFF) {
                while (PGresult* r = PQgetResult(conn_->raw()))
                    PQclear(r);
                PQexitPipelineMode(conn_->raw());
            }
            if (PQtransactionStatus(conn_->raw()) != PQTRANS_IDLE)
                conn_->exec("ROLLBACK");
        }
    } catch (...) {
        conn_.reset(); // a new session starts clean
    }
}

void Worker::rollback(pg::Pipeline& pl)
{
    if (!pl.active())
        pl.enter();
    pl.send_query("ROLLBACK", {}, {"ROLLBACK"});
    pl.sync();
    pl.leave();
    pl.reset();
}

bool Worker::process(Batch& batch)
{
    auto& order = ctx_.order;
    auto& stats = ctx_.stats;
    stats.wait_dispatch_micros.fetch_add(micros_since(batch.closed_at), std::memory_order_relaxed);

    // Rule 5: a batch that conflicts with an earlier one starts only once that one committed.
    set_state(WorkerState::waiting_dependency);
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        auto w = order.wait_committed(batch.after, std::chrono::milliseconds(100));
        if (w == CommitOrder::Wait::aborted)
            return false;
        if (w == CommitOrder::Wait::ready)
            break;
    }
    stats.wait_dependency_micros.fetch_add(micros_since(t0), std::memory_order_relaxed);

    set_state(WorkerState::executing);
    order.executing(batch.seq, conn_->backend_pid());
    Counts counts;
    Outcome outcome;
    bool compact = true;
    // When every earlier batch has committed, the gate is open: COMMIT goes in the same round
    // trip as the statements (one wake-up of the target and of this worker instead of two).
    // Tried once; if that attempt fails, the ordinary way runs it again and handles the error.
    bool pipelined = true;
    auto attempt = [&](bool serial) {
        counts = {};
        const bool commit = pipelined && order.committed() + 1 >= batch.seq;
        outcome = execute(batch, serial, compact, commit, counts);
    };
    try {
        attempt(batch.after + 1 >= batch.seq);
        // Runs the batch again once every earlier batch committed (then nothing can conflict).
        auto rerun = [&] {
            set_state(WorkerState::waiting_dependency);
            if (order.wait_committed(batch.seq - 1, std::chrono::hours(24)) != CommitOrder::Wait::ready)
                return false;
            set_state(WorkerState::executing);
            attempt(true);
            return true;
        };
        for (;;) {
            if (outcome == Outcome::committed)
                break;
            if (outcome == Outcome::unpipelined) {
                // The gate is open (it was when COMMIT went out): no wait.
                pipelined = false;
                attempt(true);
                continue;
            }
            if (outcome == Outcome::fallback) {
                // The compacted batch's transient states differed from the source's.
                stats.compaction_fallbacks.fetch_add(1, std::memory_order_relaxed);
                spdlog::debug("worker {}: batch {} replayed uncompacted", index_, batch.seq);
                compact = false;
                if (!rerun())
                    return false;
                continue;
            }
            if (outcome == Outcome::conflict) {
                // A unique violation or deadlock the keys did not foresee.
                stats.retries_conflict.fetch_add(1, std::memory_order_relaxed);
                if (!rerun())
                    return false;
                continue;
            }
            set_state(WorkerState::waiting_commit);
            bool blocking = false;
            auto t1 = std::chrono::steady_clock::now();
            bool turn = wait_turn(batch, outcome == Outcome::written, blocking);
            stats.wait_commit_micros.fetch_add(micros_since(t1), std::memory_order_relaxed);
            if (blocking) {
                // An earlier batch waits for a lock we hold, and we wait for it at the gate.
                stats.retries_blocked.fetch_add(1, std::memory_order_relaxed);
                spdlog::debug("worker {}: batch {} blocks an earlier batch; rolled back, runs again after it",
                              index_, batch.seq);
                pg::Pipeline pl(*conn_);
                rollback(pl);
                if (!rerun())
                    return false;
                continue;
            }
            if (!turn) {
                abandon();
                return false;
            }
            break;
        }
    } catch (const Interrupted&) {
        return false;
    }

    if (outcome == Outcome::written) {
        try {
            // COMMIT only once every result was checked and every earlier batch committed.
            conn_->exec("COMMIT");
        } catch (const pg::PgError& e) {
            if (cancelled_by_stop(e.sqlstate())) {
                note_cancel("COMMIT");
                return false;
            }
            throw TargetError("COMMIT " + change_context(*batch.txns.back().txn) + ": " + e.what(), e.retryable(),
                              e.violation());
        }
    }
    const bool wrote = outcome == Outcome::written || outcome == Outcome::committed;
    if (wrote) {
        if (outcome == Outcome::committed)
            stats.batches_one_round_trip.fetch_add(1, std::memory_order_relaxed);
        stats.changes_insert.fetch_add(counts.inserts, std::memory_order_relaxed);
        stats.changes_update.fetch_add(counts.updates, std::memory_order_relaxed);
        stats.changes_delete.fetch_add(counts.deletes, std::memory_order_relaxed);
        stats.changes_truncate.fetch_add(counts.truncates, std::memory_order_relaxed);
        stats.statements_executed.fetch_add(counts.statements, std::memory_order_relaxed);
        stats.rows_written.fetch_add(counts.rows, std::memory_order_relaxed);
    }

    // Progress, in source order (only the batch whose turn it is gets here).
    auto& progress = ctx_.progress;
    const auto& last = *batch.txns.back().txn;
    if (wrote) {
        // written_end before handled_end: Progress::confirmable_flush() relies on this order.
        progress.written_end.store(last.end_lsn.value());
        progress.handled_end.store(last.end_lsn.value());
        auto now = std::chrono::system_clock::now();
        for (const auto& st : batch.txns)
            if (st.txn->commit_lsn >= ctx_.resume) {
                stats.transactions_applied.fetch_add(1, std::memory_order_relaxed);
                stats.observe_latency(std::chrono::duration<double>(now - to_system(st.txn->commit_ts)).count());
            }
    } else {
        // Already applied before a restart (rule 4), or nothing to write.
        progress.handled_end.store(std::max(progress.handled_end.load(), last.end_lsn.value()));
    }
    progress.applied_seq.fetch_add(batch.txns.size(), std::memory_order_acq_rel);
    stats.batches_committed.fetch_add(1, std::memory_order_relaxed);
    order.committed(batch.seq);
    set_state(WorkerState::idle);
    return true;
}

bool Worker::wait_turn(const Batch& batch, bool written, bool& blocking)
{
    auto started = std::chrono::steady_clock::now();
    auto next_check = started + k_watchdog_after;
    for (;;) {
        auto w = ctx_.order.wait_committed(batch.seq - 1, k_gate_poll);
        if (w == CommitOrder::Wait::ready)
            return true;
        if (w == CommitOrder::Wait::aborted)
            return false;
        if (!written || std::chrono::steady_clock::now() < next_check)
            continue;
        next_check = std::chrono::steady_clock::now() + k_watchdog_after;
        auto earlier = ctx_.order.executing_before(batch.seq);
        if (earlier.empty())
            continue;
        std::string pids = "{";
        for (std::size_t i = 0; i < earlier.size(); ++i)
            pids += (i ? "," : "") + std::to_string(earlier[i]);
        pids += "}";
        try {
            auto r = conn_->exec_params("SELECT EXISTS (SELECT 1 FROM unnest($1::int[]) p "
                                        "WHERE pg_backend_pid() = ANY (pg_blocking_pids(p)))",
                                        {pids});
            if (r.get(0, 0) == "t") {
                blocking = true;
                return false;
            }
        } catch (const pg::PgError& e) {
            if (cancelled_by_stop(e.sqlstate())) {
                note_cancel("the lock check at the commit gate");
                throw Interrupted();
            }
            throw TargetError("worker " + std::to_string(index_) + ": watchdog query failed: " + e.what(),
                              e.retryable());
        }
    }
}

Worker::Outcome Worker::execute(const Batch& batch, bool serial, bool compact, bool commit, Counts& counts)
{
    pg::Pipeline pl(*conn_);
    bool began = false;
    const auto& last = *batch.txns.back().txn;
    Compactor compactor;
    released_.clear();
    writer_.set_guard(commit);
    auto statements_before = writer_.statements();
    auto rows_before = writer_.rows();
    try {
        for (const auto& st : batch.txns)
            execute_txn(pl, st, compact ? &compactor : nullptr, began, counts);
        if (!began) {
            if (pl.active())
                pl.leave();
            return Outcome::empty;
        }
        compactor.flush(released_);
        drain(pl);
        writer_.flush(pl);
        counts.statements += writer_.statements() - statements_before; // TRUNCATEs were counted already
        counts.rows += writer_.rows() - rows_before;
        // The batch commits as one target transaction recording the last source transaction's
        // end: the target still only ever shows states the source had at some commit.
        auto end = last.end_lsn.str();
        auto ts = format_timestamptz(last.commit_ts);
        // Force an xid too: a transaction without one (everything compacted away, rows
        // skipped) writes no commit record, so its origin progress would be lost (rule 1).
        if (setup_name_.empty()) {
            // A new name each time: a PREPARE that succeeded before a failure stays prepared.
            setup_name_ = "pgshift_setup" + std::to_string(++setup_counter_);
            pl.send_prepare(setup_name_, "SELECT pg_current_xact_id(), pg_replication_origin_xact_setup($1, $2)", 2,
                            {"PREPARE", &last});
        }
        setup_values_ = {end.c_str(), ts.c_str()};
        pl.send_prepared(setup_name_, setup_values_, {"pg_replication_origin_xact_setup", &last});
        if (commit)
            pl.send_query("COMMIT", {}, {"COMMIT", &last});
        pl.sync();
        if (const auto& f = pl.failure()) {
            // A failed PREPARE leaves its key unprepared: forget this session's statements.
            writer_.forget_prepared();
            setup_name_.clear();
            auto what = describe(*f);
            if (cancelled_by_stop(f->sqlstate)) {
                rollback(pl);
                note_cancel(f->at.op);
                throw Interrupted();
            }
            if (commit) {
                // Nothing committed (the COMMIT was skipped, or failed): run it again without.
                spdlog::debug("worker {}: batch {} with COMMIT in the pipeline failed ({}); runs again without",
                              index_, batch.seq, what);
                rollback(pl);
                return Outcome::unpipelined;
            }
            bool retryable = f->retryable;
            auto violation = f->violation;
            bool conflict = (!serial || compact) && conflict_sqlstate(f->sqlstate);
            if (compact && conflict)
                pause_compaction(f->at.rel);
            rollback(pl);
            if (conflict)
                return compact ? Outcome::fallback : Outcome::conflict;
            throw TargetError(what, retryable, std::move(violation));
        }
        if (compact && !pl.missing_rows().empty()) {
            // Possibly a key the compactor could not see as one row: replay in source order.
            pause_compaction(pl.missing_rows().front().rel);
            rollback(pl);
            return Outcome::fallback;
        }
        for (const auto& m : pl.missing_rows()) {
            // Missing rows are divergence (rule 9).
            const auto* rel = static_cast<const RelationInfo*>(m.rel);
            const auto* txn = static_cast<const queue::Transaction*>(m.txn);
            std::string what = std::string(m.op) + " on " + (rel ? rel->mapping.source_name : "?") +
                               " found no row (the target diverged from the source)" +
                               (txn ? " " + change_context(*txn) : "");
            if (ctx_.cfg.apply.on_missing_row == config::MissingRowPolicy::error) {
                rollback(pl);
                throw TargetError(what, false);
            }
            spdlog::warn("{}; skipped (apply.on_missing_row = skip)", what);
        }
        pl.leave();
    } catch (const pg::PgError& e) {
        if (cancelled_by_stop(e.sqlstate())) {
            note_cancel("executing a batch");
            throw Interrupted();
        }
        throw TargetError(change_context(last) + ": " + e.what(), e.retryable(), e.violation());
    }
    return commit ? Outcome::committed : Outcome::written;
}

void Worker::pause_compaction(const void* rel)
{
    if (!rel)
        return;
    static_cast<const RelationInfo*>(rel)->pause_compaction(std::chrono::steady_clock::now() + k_compaction_pause);
}

void Worker::drain(pg::Pipeline& pl)
{
    for (auto& op : released_)
        writer_.add(pl, std::move(op));
    released_.clear();
}

void Worker::execute_txn(pg::Pipeline& pl, const ScheduledTxn& st, Compactor* compactor, bool& began,
                         Counts& counts)
{
    const auto& txn = *st.txn;
    if (txn.commit_lsn < ctx_.resume) {
        spdlog::debug("skipping xid {} (commit {} < resume point {})", txn.xid.value, txn.commit_lsn.str(),
                      ctx_.resume.str());
        return;
    }
    std::unordered_map<RelId, const RelationInfo*> rels;
    auto use = st.relations.begin();
    std::uint64_t change = 0;
    auto cursor = txn.messages.cursor();
    std::string_view payload;
    std::uint64_t seen = 0;
    while (cursor.next(payload)) {
        // A large transaction can take minutes: a stop request rolls it back instead of
        // waiting (nothing of it is committed, so it is simply received again later).
        if (++seen % k_stop_check_messages == 0 && ctx_.stop.load(std::memory_order_acquire)) {
            if (began)
                rollback(pl);
            else if (pl.active())
                pl.leave();
            ctx_.order.abort();
            spdlog::info("stop requested: rolled back the transaction being applied (it is applied again after "
                         "the restart)");
            throw Interrupted();
        }
        // Type messages need nothing (types resolve by name on the target); Relation messages
        // were taken into account by the scheduler; logical messages carry nothing to apply.
        auto type = static_cast<protocol::MsgType>(payload.empty() ? 0 : payload[0]);
        if (type != protocol::MsgType::insert && type != protocol::MsgType::update && type != protocol::MsgType::del &&
            type != protocol::MsgType::truncate)
            continue;
        for (; use != st.relations.end() && use->change == change; ++use)
            rels[use->relid] = use->info.get();
        ++change;
        send_change(pl, txn, protocol::decode(payload, txn.decode), rels, compactor, began, counts);
    }
}

void Worker::send_change(pg::Pipeline& pl, const queue::Transaction& txn, const protocol::Message& msg,
                         const std::unordered_map<RelId, const RelationInfo*>& rels, Compactor* compactor,
                         bool& began, Counts& counts)
{
    auto info_of = [&](RelId relid) {
        auto it = rels.find(relid);
        if (it == rels.end())
            throw ProtocolError("change for relation " + std::to_string(relid.value) +
                                " without a preceding Relation message " + change_context(txn));
        return it->second;
    };
    if (!pl.active())
        pl.enter();
    if (!began) {
        pl.send_query("BEGIN", {}, {"BEGIN", &txn});
        began = true;
    }

    if (const auto* tr = std::get_if<protocol::Truncate>(&msg)) {
        // Everything before it goes first. Listed relations only; partitioned ones include
        // their partitions. CASCADE is ignored, as PostgreSQL's own apply does: the source
        // listed every table it hit.
        if (compactor) {
            compactor->flush(released_);
            drain(pl);
        }
        writer_.flush(pl);
        std::string sql = "TRUNCATE ";
        for (std::size_t i = 0; i < tr->relids.size(); ++i) {
            const auto& m = info_of(tr->relids[i])->mapping;
            sql += (i ? ", " : "") + std::string(m.partitioned ? "" : "ONLY ") + m.qualified;
        }
        if (tr->flags & protocol::Truncate::k_restart_identity)
            sql += " RESTART IDENTITY";
        pl.send_query(sql, {}, {"TRUNCATE", &txn});
        ++counts.truncates;
        ++counts.statements;
        return;
    }

    const RelationInfo* info = info_of(relid_of(msg));
    RowOp op;
    op.table = info;
    op.txn = &txn;
    if (const auto* ins = std::get_if<protocol::Insert>(&msg)) {
        op.kind = OpKind::insert;
        op.row = own(ins->new_tuple);
        ++counts.inserts;
    } else if (const auto* up = std::get_if<protocol::Update>(&msg)) {
        op.kind = OpKind::update;
        op.old_kind = up->old_kind;
        op.row = own(up->new_tuple);
        if (up->old_kind != protocol::OldKind::none)
            op.old = own(up->old_tuple);
        ++counts.updates;
    } else {
        const auto& del = std::get<protocol::Delete>(msg);
        op.kind = OpKind::del;
        op.old_kind = del.old_kind;
        op.old = own(del.old_tuple);
        ++counts.deletes;
    }
    if (!compactor) {
        writer_.add(pl, std::move(op));
        return;
    }
    bool compact = info->compactable && !info->compaction_paused(std::chrono::steady_clock::now());
    CompactTable table{info, info->mapping.relid.value, compact ? &info->identity : nullptr};
    compactor->add(table, std::move(op), released_);
    drain(pl);
    if (compactor->bytes() > k_compact_max_bytes) {
        // A large group: what is gathered so far goes now (memory stays bounded).
        compactor->flush(released_);
        drain(pl);
    }
}

} // namespace pgshift::apply
