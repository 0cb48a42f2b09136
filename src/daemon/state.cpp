// DaemonState: status snapshots for the control plane, built from atomics.
#include "pgshift/daemon/state.hpp"

#include "pgshift/verify/runner.hpp"

#include "pgshift/apply/worker.hpp"
#include "pgshift/common/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <utility>

namespace pgshift::daemon {

namespace {

std::string version_string(int v)
{
    if (v == 0)
        return "";
    return std::to_string(v / 10000) + "." + std::to_string(v % 100);
}

constexpr bool same_buckets()
{
    for (std::size_t i = 0; i < control::k_latency_buckets.size(); ++i)
        if (control::k_latency_buckets[i] != queue::Stats::k_buckets[i])
            return false;
    return control::k_latency_buckets.size() == queue::Stats::k_buckets.size();
}
static_assert(same_buckets(), "the histogram apply fills and the one /metrics renders must agree");

constexpr bool same_worker_states()
{
    for (std::size_t i = 0; i < control::k_worker_states.size(); ++i)
        if (std::string_view(control::k_worker_states[i]) != apply::k_worker_states[i])
            return false;
    return control::k_worker_states.size() == apply::k_worker_states.size();
}
static_assert(same_worker_states(), "apply's worker states and the ones /metrics lists must agree");

} // namespace

std::int64_t steady_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string Liveness::check(const SessionSample& s, std::int64_t now_ms)
{
    const bool first = !have_last_;
    // Apply.
    if (!s.apply_running || first || !last_.apply_running || s.applied_seq != last_.applied_seq ||
        s.batches_committed != last_.batches_committed || s.applied_seq >= s.pushed_seq || s.apply_on_hold ||
        s.statement_on_target)
        apply_progress_ms_ = now_ms;
    // Reader: a new stream, WAL received, or an answer the source saw arrive.
    if (!s.reader_running || first || !last_.reader_running || s.received != last_.received)
        reader_progress_ms_ = now_ms;
    reader_progress_ms_ = std::max(reader_progress_ms_, s.reply_changed_ms);
    last_ = s;
    have_last_ = true;

    std::string why;
    if (now_ms - apply_progress_ms_ > k_stall_ms)
        why = "apply has committed nothing for " + std::to_string((now_ms - apply_progress_ms_) / 1000) + " s while " +
              std::to_string(s.pushed_seq - s.applied_seq) + " transaction(s) wait and no statement runs on the target";
    const bool monitor_looked = s.reply_sampled_ms > 0 && now_ms - s.reply_sampled_ms <= k_sample_fresh_ms;
    if (s.reader_running && monitor_looked && now_ms - reader_progress_ms_ > k_stall_ms)
        why += std::string(why.empty() ? "" : "; ") +
               "the stream is stuck: nothing received from the upstream, and none of the reader's status replies "
               "seen there, for " +
               std::to_string((now_ms - reader_progress_ms_) / 1000) + " s";
    return why;
}

void DaemonState::set_session(SessionView v)
{
    std::lock_guard lk(mutex_);
    session_ = std::move(v);
}

void DaemonState::set_copy(std::shared_ptr<const copy::CopyProgress> progress)
{
    std::lock_guard lk(mutex_);
    copy_ = std::move(progress);
}

void DaemonState::set_endpoint(bool source, bool connected, int server_version_num)
{
    (source ? source_connected_ : target_connected_).store(connected);
    if (server_version_num)
        (source ? source_version_ : target_version_).store(server_version_num);
}

void DaemonState::resume()
{
    paused_.store(false);
    int failed = static_cast<int>(State::failed);
    state_.compare_exchange_strong(failed, static_cast<int>(State::starting));
}

void DaemonState::set_last_error(const std::string& e)
{
    auto at = now_rfc3339();
    std::lock_guard lk(mutex_);
    last_error_ = e;
    last_error_at_ = at;
    error_current_ = true;
}

void DaemonState::set_violation(std::optional<RuleViolation> v)
{
    std::lock_guard lk(mutex_);
    violation_ = std::move(v);
}

std::optional<RuleViolation> DaemonState::take_violation()
{
    std::lock_guard lk(mutex_);
    return std::exchange(violation_, std::nullopt);
}

void DaemonState::clear_current_error()
{
    std::lock_guard lk(mutex_);
    error_current_ = false;
}

void DaemonState::set_unreplicated_tables(std::vector<std::string> lines)
{
    std::lock_guard lk(mutex_);
    unreplicated_ = std::move(lines);
}

void DaemonState::set_schema_differences(std::vector<std::string> lines, std::vector<std::string> blocking)
{
    std::lock_guard lk(mutex_);
    schema_differences_ = std::move(lines);
    schema_blocking_ = std::move(blocking);
}

void DaemonState::beat() { heartbeat_.store(steady_ms()); }

bool DaemonState::alive() const
{
    // The main loop beats at least every 200 ms, also while backing off between sessions.
    return steady_ms() - heartbeat_.load() < 5000;
}

control::StatusSnapshot DaemonState::snapshot() const
{
    control::StatusSnapshot s;
    SessionView session;
    std::shared_ptr<const copy::CopyProgress> copy;
    {
        std::lock_guard lk(mutex_);
        session = session_;
        copy = copy_;
        s.last_error = last_error_;
        s.last_error_at = last_error_at_;
        if (error_current_)
            s.current_error = last_error_;
        s.tables_not_replicated = unreplicated_;
        s.schema_differences = schema_differences_;
        s.schema_blocking = schema_blocking_;
        s.cutover_write_downtime_seconds = switch_.write_downtime_seconds;
        s.cutover = switch_;
    }
    s.name = name_;
    s.version = version_;
    auto st = state();
    s.paused = paused_.load();
    if (st == State::streaming && s.paused)
        st = State::paused;
    s.state = control::k_states.at(static_cast<std::size_t>(st));
    s.direction = reverse_.load() ? "reverse" : "forward";
    s.source = {source_connected_.load(), version_string(source_version_.load())};
    s.target = {target_connected_.load(), version_string(target_version_.load())};
    s.source_lsn = source_lsn_.load();
    s.slot_retained_wal_bytes = slot_retained_.load();

    if (session.progress) {
        const auto& p = *session.progress;
        s.received_lsn = p.received.load();
        s.confirmed_lsn = p.confirmed.load();
        s.applied_lsn = std::max(p.written_end.load(), s.confirmed_lsn);
        s.source_lsn = std::max({s.source_lsn, s.received_lsn, s.applied_lsn});
        s.lag_bytes = s.source_lsn - s.applied_lsn;
        if (auto ts = p.oldest_unapplied_commit_ts()) {
            auto age = pg_now().micros - *ts;
            s.lag_seconds = age > 0 ? static_cast<double>(age) / 1e6 : 0.0;
        }
    }
    if (session.queue) {
        s.queue_changes = session.queue->entries();
        s.queue_bytes = session.queue->bytes();
    }

    const auto& x = stats_;
    s.transactions_applied = x.transactions_applied.load();
    s.changes_insert = x.changes_insert.load();
    s.changes_update = x.changes_update.load();
    s.changes_delete = x.changes_delete.load();
    s.changes_truncate = x.changes_truncate.load();
    s.wal_received_bytes = x.wal_received_bytes.load();
    s.errors_source = x.errors_source.load();
    s.errors_decode = x.errors_decode.load();
    s.errors_apply = x.errors_apply.load();
    s.errors_control = x.errors_control.load();
    s.reconnects_source = x.reconnects_source.load();
    s.reconnects_target = x.reconnects_target.load();
    s.spill_errors = x.spill_errors.load();
    if (auto* v = verifier_.load()) {
        auto r = v->report();
        auto& sv = s.verify;
        sv.state = r.state;
        sv.tables_total = r.tables.size();
        sv.tables_done = r.tables_done;
        sv.rows_compared = r.rows_compared;
        for (const auto& t : r.tables) {
            sv.tables_match += t.result == "match";
            sv.tables_mismatch += t.result == "mismatch";
            sv.tables_error += t.result == "error";
        }
        sv.rows_per_second = r.seconds > 0 ? static_cast<double>(r.rows_compared) / r.seconds : 0;
    }
    auto& a = s.apply;
    a.workers = x.workers.load();
    for (int w = 0; w < a.workers && w < static_cast<int>(x.worker_state.size()); ++w) {
        auto st = std::min<std::size_t>(x.worker_state[static_cast<std::size_t>(w)].load(), a.by_state.size() - 1);
        a.worker_states.emplace_back(control::k_worker_states[st]);
        ++a.by_state[st];
    }
    a.batches_dispatched = x.batches_dispatched.load();
    a.batches_committed = x.batches_committed.load();
    a.batches_chained = x.batches_chained.load();
    a.batches_one_round_trip = x.batches_one_round_trip.load();
    a.batches_inline = x.batches_inline.load();
    a.wait_dispatch_seconds = static_cast<double>(x.wait_dispatch_micros.load()) / 1e6;
    a.wait_dependency_seconds = static_cast<double>(x.wait_dependency_micros.load()) / 1e6;
    a.wait_commit_seconds = static_cast<double>(x.wait_commit_micros.load()) / 1e6;
    a.retries_conflict = x.retries_conflict.load();
    a.retries_blocked = x.retries_blocked.load();
    a.statements = x.statements_executed.load();
    a.rows_written = x.rows_written.load();
    a.compaction_fallbacks = x.compaction_fallbacks.load();
    s.errors_copy = errors_copy_.load();
    s.initial_copy.rows_copied = copy_rows_.load();
    s.initial_copy.bytes_copied = copy_bytes_.load();
    if (copy) {
        auto t = copy->totals();
        auto& ic = s.initial_copy;
        ic.tables_total = t.tables;
        ic.tables_done = t.done;
        ic.tables_copying = t.copying;
        ic.sessions = copy->sessions_imported.load();
        ic.percent = t.pages ? 100.0 * static_cast<double>(t.pages_done) / static_cast<double>(t.pages) : 0;
        if (t.seconds > 0) {
            ic.rows_per_second = static_cast<double>(t.rows) / t.seconds;
            ic.bytes_per_second = static_cast<double>(t.bytes) / t.seconds;
        }
        if (t.pages_done > 0 && t.pages >= t.pages_done)
            ic.eta_seconds = t.seconds * static_cast<double>(t.pages - t.pages_done) / static_cast<double>(t.pages_done);
        if (copy->planned.load(std::memory_order_acquire))
            for (const auto& p : copy->tables) {
                control::CopyTableStatus ts;
                ts.table = p->display;
                ts.state = p->state();
                ts.rows = p->rows.load();
                ts.bytes = p->bytes.load();
                ts.size_bytes = p->pages * 8192;
                ts.percent = ts.state == "done" ? 100.0
                             : p->pages ? 100.0 * static_cast<double>(std::min(p->pages_done.load(), p->pages)) /
                                              static_cast<double>(p->pages)
                                        : 0.0;
                ic.tables.push_back(std::move(ts));
            }
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < s.latency_bucket_counts.size(); ++i) {
        cumulative += x.latency_buckets[i].load();
        s.latency_bucket_counts[i] = cumulative;
    }
    s.latency_count = x.latency_count.load();
    s.latency_sum = static_cast<double>(x.latency_sum_micros.load()) / 1e6;

    if (st != State::streaming && st != State::paused)
        s.not_ready_reasons.push_back(std::string("state is ") + s.state);
    if (!s.source.connected)
        s.not_ready_reasons.push_back("source not connected");
    if (!s.target.connected)
        s.not_ready_reasons.push_back("target not connected");
    for (const auto& t : s.tables_not_replicated)
        s.not_ready_reasons.push_back(t);
    return s;
}

bool DaemonState::start_verify(bool checksums)
{
    auto* v = verifier_.load();
    return v && !operation_active_.load() && v->start(checksums);
}

control::OperationStart DaemonState::start_switch(const std::string& kind)
{
    control::OperationStart out;
    const bool rollback = kind == "rollback";
    auto s = snapshot(); // before the lock: snapshot() takes it
    if (operation_active_.load()) {
        auto r = switch_report();
        out.status = 409;
        out.error = r.phase.empty() || r.id.empty() ? "another operation is running (finish)"
                                                     : "another operation is running: " + r.id + " (" + r.kind + ", " +
                                                           r.phase + ")";
        out.reasons = {"GET /v1/cutover shows it"};
        return out;
    }
    if (s.verify.state == "holding" || s.verify.state == "running") {
        out.status = 409;
        out.error = "a comparison is running";
        out.reasons = {"GET /v1/verify shows it; start the " + kind + " once it ended"};
        return out;
    }
    auto& why = out.reasons;
    if (!rollback && s.direction != "forward")
        why.push_back("direction is " + s.direction + ": a cutover already happened (run rollback to go back)");
    if (rollback && s.direction != "reverse")
        why.push_back("direction is " + s.direction + ": there is nothing to roll back (no cutover happened)");
    if (s.state == "copying")
        why.push_back("the initial copy is still running (" + std::to_string(s.initial_copy.tables_done) + "/" +
                      std::to_string(s.initial_copy.tables_total) + " tables done)");
    else if (s.state == "paused")
        why.push_back("apply is paused: run pgshift resume first");
    else if (s.state != "streaming")
        why.push_back("not streaming (state " + s.state + (s.current_error.empty() ? "" : ": " + s.current_error) + ")");
    if (!s.source.connected)
        why.push_back("the source is not reachable");
    if (!s.target.connected)
        why.push_back("the target is not reachable");
    // Their rows are not (all) on the new primary; the switch itself checks again behind the fence.
    for (const auto& t : s.tables_not_replicated)
        why.push_back(t);
    for (const auto& d : s.schema_blocking)
        why.push_back(d);
    const double max_lag = max_lag_seconds_.load();
    if (s.lag_seconds > max_lag) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "lag is %.1f s, above cutover.max_lag_seconds (%g s)", s.lag_seconds, max_lag);
        why.push_back(buf);
    }
    if (!why.empty()) {
        out.status = 412;
        out.error = kind + " refused: preconditions failed";
        return out;
    }
    std::lock_guard lk(mutex_);
    if (operation_active_.exchange(true)) { // a concurrent request won
        out.status = 409;
        out.error = "another operation is running";
        return out;
    }
    switch_ = {};
    switch_.id = kind + "-" + std::to_string(++operations_);
    switch_.kind = kind;
    switch_.phase = "checking";
    switch_.started_at = now_rfc3339();
    request_ = kind;
    out.operation = switch_;
    return out;
}

control::OperationStart DaemonState::start_finish()
{
    control::OperationStart out;
    if (operation_active_.exchange(true)) {
        out.status = 409;
        out.error = "an operation is running; finish once it ended";
        out.reasons = {"GET /v1/cutover shows it"};
        return out;
    }
    std::lock_guard lk(mutex_);
    request_ = "finish";
    return out;
}

std::string DaemonState::take_request()
{
    std::lock_guard lk(mutex_);
    return std::exchange(request_, std::string());
}

control::SwitchReport DaemonState::switch_report() const
{
    std::lock_guard lk(mutex_);
    return switch_;
}

void DaemonState::update_switch(const std::function<void(control::SwitchReport&)>& change)
{
    std::lock_guard lk(mutex_);
    change(switch_);
}

control::VerifyReport DaemonState::verify_report() const
{
    auto* v = verifier_.load();
    return v ? v->report() : control::VerifyReport{};
}

} // namespace pgshift::daemon
