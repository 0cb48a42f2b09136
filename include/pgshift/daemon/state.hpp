// The daemon's observable state: what the control plane reads, and the pause switch it flips.
//
// Design notes
// - Written by the main, reader, apply and monitor threads through atomics; the current
//   session's Progress and queue are published as a shared_ptr under a mutex held only to copy
//   or swap the pointer, so control-plane reads never wait on replication work.
#pragma once

#include "pgshift/apply/hold.hpp"
#include "pgshift/common/errors.hpp"
#include "pgshift/control/status.hpp"
#include "pgshift/copy/snapshot_copy.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::verify {
class Runner;
}

namespace pgshift::daemon {

enum class State : int { starting, copying, streaming, paused, cutting_over, rolling_back, failed, stopping };

/// Milliseconds of the steady clock (the time base of the heartbeat and of Liveness).
[[nodiscard]] std::int64_t steady_ms();

/// What the watchdog knows of a session's threads at one instant, read by the main thread from
/// atomics (Progress, Stats, the pause and hold switches, DaemonState::stream_reply_*).
struct SessionSample {
    bool reader_running = false;   ///< the reader thread is streaming
    bool apply_running = false;    ///< the apply thread runs (not yet during the initial copy)
    std::uint64_t received = 0;    ///< Progress::received
    std::uint64_t pushed_seq = 0;  ///< Progress::pushed_seq: transactions queued
    std::uint64_t applied_seq = 0; ///< Progress::applied_seq: transactions applied or skipped
    std::uint64_t batches_committed = 0;
    bool statement_on_target = false; ///< a worker is executing a batch (WorkerState::executing)
    bool apply_on_hold = false;       ///< paused by the operator, or held for a comparison
    std::int64_t reply_sampled_ms = 0; ///< when the monitor last found the upstream's walsender
    std::int64_t reply_changed_ms = 0; ///< when it last saw that walsender's reply time change
};

/// Whether a session's reader and apply threads make progress or are legitimately idle: the
/// condition for systemd's WATCHDOG=1 (issue 12). Main thread only; pure (time is passed in).
///
/// - Apply is fine while it commits, while nothing waits for it (every queued transaction
///   applied), while it is paused or held, and while a worker runs a statement on the target:
///   a long batch or a lock another session holds is the server's time, and a restart would
///   not make it shorter (`pgshift status` and the lag alerts show it). What is left is a
///   wedge of our own: transactions wait, no statement runs, nothing commits.
/// - The reader answers the source at least every second, also when the source is idle; the
///   monitor thread sees those answers arrive (pg_stat_replication.reply_time of our
///   walsender). The reader is wedged when the monitor could look recently, no answer arrived
///   and no WAL was received for k_stall_ms. When the monitor cannot look (source unreachable,
///   server older than 12) the reader is not judged: the session's own timeouts end it.
class Liveness {
public:
    static constexpr std::int64_t k_stall_ms = 20000;
    /// How recent the monitor's last look must be for the reader to be judged.
    static constexpr std::int64_t k_sample_fresh_ms = 10000;

    /// Feeds a sample taken at `now_ms`; "" when healthy, else what is wedged and for how long.
    [[nodiscard]] std::string check(const SessionSample& s, std::int64_t now_ms);

private:
    SessionSample last_;
    bool have_last_ = false;
    std::int64_t apply_progress_ms_ = 0;
    std::int64_t reader_progress_ms_ = 0;
};

/// One session's moving parts, as far as status is concerned.
struct SessionView {
    std::shared_ptr<queue::Progress> progress;
    std::shared_ptr<queue::TxnQueue> queue;
};

class DaemonState : public control::StatusProvider {
public:
    DaemonState(std::string name, std::string version) : name_(std::move(name)), version_(std::move(version)) {}

    [[nodiscard]] control::StatusSnapshot snapshot() const override;
    [[nodiscard]] bool alive() const override;
    void pause() override { paused_.store(true); }
    bool start_verify(bool checksums) override;
    [[nodiscard]] control::VerifyReport verify_report() const override;
    /// The comparison runner (owned by run(); null until it exists).
    void set_verifier(verify::Runner* r) { verifier_.store(r); }
    /// Where apply holds for a comparison (apply::Engine reads it; outlives sessions).
    [[nodiscard]] apply::Hold& hold() { return hold_; }
    /// Also leaves `failed`: the main loop starts a new session at once, so what the caller
    /// reports is the state the daemon is going to, not the error it is leaving.
    void resume() override;

    // Cutover, rollback and finish (cutover/switchover.hpp runs them on the main thread).
    control::OperationStart start_switch(const std::string& kind) override;
    [[nodiscard]] control::SwitchReport switch_report() const override;
    control::OperationStart start_finish() override;
    /// The operation POSTed and not yet taken by the main loop: "cutover", "rollback", "finish"
    /// or "" (taking it clears it).
    [[nodiscard]] std::string take_request();
    /// Changes the report of the running (or last) operation under the lock.
    void update_switch(const std::function<void(control::SwitchReport&)>& change);
    /// The running operation ended (or never started): new ones may start.
    void end_operation() { operation_active_.store(false); }
    [[nodiscard]] bool operation_active() const { return operation_active_.load(); }
    /// Which way changes flow now (false: forward, source to target).
    void set_reverse(bool reverse) { reverse_.store(reverse); }
    [[nodiscard]] bool reverse() const { return reverse_.load(); }
    /// cutover.max_lag_seconds (a precondition; reloadable).
    void set_max_lag_seconds(double s) { max_lag_seconds_.store(s); }

    void set_state(State s) { state_.store(static_cast<int>(s)); }
    [[nodiscard]] State state() const { return static_cast<State>(state_.load()); }
    void set_session(SessionView v);
    /// The initial copy running now (null when none): status reads its progress.
    void set_copy(std::shared_ptr<const copy::CopyProgress> progress);
    void set_endpoint(bool source, bool connected, int server_version_num);
    /// set_endpoint for the upstream (true) or downstream side of the direction streaming now.
    void set_upstream_endpoint(bool upstream, bool connected, int server_version_num)
    {
        set_endpoint(upstream != reverse(), connected, server_version_num);
    }
    /// Records an error: it is the current error until clear_current_error() (a session reached
    /// streaming again), and stays visible afterwards as the last error, with its time.
    void set_last_error(const std::string& e);
    void clear_current_error();
    /// The rule the target rejected a row for, when that ended the last session (else none):
    /// the main loop asks whether the source dropped it (schema_follower.hpp).
    void set_violation(std::optional<RuleViolation> v);
    [[nodiscard]] std::optional<RuleViolation> take_violation();
    /// The source's current WAL position and the WAL the slot retains (monitor thread).
    void set_source_position(std::uint64_t lsn, std::uint64_t retained)
    {
        source_lsn_.store(lsn);
        slot_retained_.store(retained);
    }
    /// Selected source tables that are not replicated, one line each with the reason (TableWatch).
    void set_unreplicated_tables(std::vector<std::string> lines);
    /// Indexes and constraints of replicated source tables the target lacks, one line each
    /// (SchemaFollower); `blocking`: those that refuse a switch.
    void set_schema_differences(std::vector<std::string> lines, std::vector<std::string> blocking);
    /// Rows and bytes copied into the target (tables that joined while streaming).
    void add_copied(std::uint64_t rows, std::uint64_t bytes)
    {
        copy_rows_.fetch_add(rows);
        copy_bytes_.fetch_add(bytes);
    }
    void count_copy_error() { errors_copy_.fetch_add(1); }
    /// Heartbeat of the main loop, for /livez.
    void beat();
    /// Monitor thread: it found the upstream's walsender for our slot; `changed` when that
    /// walsender (or the last standby reply it got from the reader) differs from its last look.
    void observe_stream_reply(bool changed)
    {
        auto now = steady_ms();
        stream_reply_sampled_ms_.store(now);
        if (changed)
            stream_reply_changed_ms_.store(now);
    }
    [[nodiscard]] std::int64_t stream_reply_sampled_ms() const { return stream_reply_sampled_ms_.load(); }
    [[nodiscard]] std::int64_t stream_reply_changed_ms() const { return stream_reply_changed_ms_.load(); }

    [[nodiscard]] const std::atomic<bool>& paused_flag() const { return paused_; }
    [[nodiscard]] queue::Stats& stats() { return stats_; }

private:
    const std::string name_;
    const std::string version_;
    std::atomic<int> state_{0};
    std::atomic<bool> paused_{false};
    std::atomic<bool> source_connected_{false}, target_connected_{false};
    std::atomic<int> source_version_{0}, target_version_{0};
    std::atomic<std::uint64_t> source_lsn_{0}, slot_retained_{0};
    std::atomic<std::int64_t> heartbeat_{0};
    std::atomic<std::int64_t> stream_reply_sampled_ms_{0}, stream_reply_changed_ms_{0};
    std::atomic<std::uint64_t> copy_rows_{0}, copy_bytes_{0}, errors_copy_{0};
    queue::Stats stats_;
    apply::Hold hold_;
    std::atomic<verify::Runner*> verifier_{nullptr};
    std::atomic<bool> reverse_{false}, operation_active_{false};
    std::atomic<double> max_lag_seconds_{10};
    std::uint64_t operations_ = 0;      // guarded by mutex_
    std::string request_;               // guarded by mutex_
    control::SwitchReport switch_;      // guarded by mutex_

    mutable std::mutex mutex_;
    SessionView session_;     // guarded by mutex_
    std::shared_ptr<const copy::CopyProgress> copy_; // guarded by mutex_
    std::string last_error_;  // guarded by mutex_
    std::optional<RuleViolation> violation_; // guarded by mutex_
    std::string last_error_at_; // guarded by mutex_; RFC 3339, UTC
    bool error_current_ = false; // guarded by mutex_
    std::vector<std::string> unreplicated_; // guarded by mutex_
    std::vector<std::string> schema_differences_, schema_blocking_; // guarded by mutex_
};

} // namespace pgshift::daemon
