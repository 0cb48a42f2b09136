// The narrow interface between the control plane and the rest of the daemon.
//
// Handlers read a StatusSnapshot (built from atomics, never by querying PostgreSQL) and post
// commands; they never block on a database and never touch a connection.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace pgshift::control {

/// States of SPEC section 3, in the order pgshift_state lists them.
inline constexpr std::array<const char*, 8> k_states = {"starting",     "copying", "streaming", "paused",
                                                        "cutting_over", "rolling_back", "failed", "stopping"};

/// Phases of a cutover or rollback before it ends, in the order pgshift_cutover_phase_seconds lists them.
inline constexpr std::array<const char*, 6> k_switch_phases = {"checking",          "fencing",   "draining",
                                                               "syncing_sequences", "verifying", "switching"};

/// States of an apply worker, in the order pgshift_apply_workers lists them.
inline constexpr std::array<const char*, 4> k_worker_states = {"idle", "waiting_dependency", "executing",
                                                               "waiting_commit"};

/// Upper bounds (seconds) of the apply latency histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 12> k_latency_buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                             0.5,   1,    2.5,   5,    10,  30};

struct EndpointStatus {
    bool connected = false;
    std::string server_version; ///< e.g. "15.20"; empty when never connected
};

/// One table of the initial copy (status' per-table view, largest first).
struct CopyTableStatus {
    std::string table;               ///< schema.table
    std::string state;               ///< pending | copying | done
    std::uint64_t rows = 0, bytes = 0; ///< copied so far (bytes: COPY text)
    std::uint64_t size_bytes = 0;    ///< heap size on the source when the copy was planned
    double percent = 0;              ///< share of its heap pages committed on the target
};

/// A comparison of source and target (SPEC section 5), as GET /v1/verify reports it.
struct VerifyReport {
    struct KeyDiff {
        std::string key;  ///< the key as text, e.g. (42) or (7,"a b")
        std::string kind; ///< missing_on_target | extra_on_target | different
    };
    struct Table {
        std::string table;                ///< schema.table
        std::string result = "pending";   ///< pending | running | match | mismatch | error
        bool keyed = false;               ///< compared by key ranges (else as a whole)
        std::uint64_t source_rows = 0, target_rows = 0;
        std::vector<std::string> ranges;  ///< key ranges that differ, "(lo, hi]"
        std::vector<KeyDiff> keys;        ///< the differing keys (at most 100)
        bool keys_truncated = false;
        std::string error;
    };
    std::string id;                 ///< empty: no comparison ran yet
    std::string state = "none";     ///< none | holding | running | match | mismatch | error
    bool checksums = true;
    std::string lsn;                ///< the common point (source snapshot = target state)
    std::string applied_at_start;   ///< applied position when it started (lag it had to cover)
    std::string started_at, finished_at;
    std::uint64_t tables_done = 0, rows_compared = 0;
    double seconds = 0;
    std::string error;
    std::vector<Table> tables;
};

/// A cutover or rollback (SPEC section 3), as GET /v1/cutover reports it.
struct SwitchReport {
    struct Phase {
        std::string name;
        double seconds = 0;
    };
    std::string id;    ///< empty: none ran yet
    std::string kind;  ///< cutover | rollback
    std::string phase; ///< checking fencing draining syncing_sequences verifying switching done failed aborted
    std::string started_at, fenced_at, finished_at; ///< RFC 3339, UTC; empty until reached
    double write_downtime_seconds = 0; ///< from the fence to done (so far, while running)
    std::string final_lsn;             ///< the fenced primary's last WAL position
    std::string error;                 ///< why it aborted or failed
    std::vector<Phase> phases;         ///< each phase reached, with its duration
};

/// The answer to POST /v1/cutover, /v1/rollback and /v1/finish.
struct OperationStart {
    int status = 202;                 ///< 202 started, 409 another operation runs, 412 preconditions failed
    std::string error;                ///< for 409 and 412
    std::vector<std::string> reasons; ///< every failed precondition (412)
    SwitchReport operation;           ///< the started operation (202)
};

struct StatusSnapshot {
    std::string name;
    std::string version;
    std::string state = "starting"; ///< one of k_states
    std::string direction = "forward"; ///< forward | reverse
    bool paused = false;
    EndpointStatus source;
    EndpointStatus target;

    // Positions as byte offsets (pg_lsn values); 0 when unknown.
    std::uint64_t source_lsn = 0;    ///< the source's current WAL end (keepalives, periodic query)
    std::uint64_t received_lsn = 0;
    std::uint64_t applied_lsn = 0;
    std::uint64_t confirmed_lsn = 0; ///< flush position reported to the source
    std::uint64_t lag_bytes = 0;     ///< source_lsn - applied_lsn (0 when caught up)
    double lag_seconds = 0;          ///< now - source commit time of the oldest unapplied transaction

    struct {
        std::uint64_t tables_total = 0, tables_done = 0, tables_copying = 0;
        std::uint64_t rows_copied = 0, bytes_copied = 0;
        // Of the copy running now (empty/0 when none): sessions that imported the snapshot,
        // overall progress by heap pages, rates since it started, time left (-1: unknown).
        int sessions = 0;
        double percent = 0, rows_per_second = 0, bytes_per_second = 0, eta_seconds = -1;
        std::vector<CopyTableStatus> tables;
    } initial_copy;

    std::uint64_t transactions_applied = 0;
    std::uint64_t changes_insert = 0, changes_update = 0, changes_delete = 0, changes_truncate = 0;
    std::uint64_t wal_received_bytes = 0;
    std::uint64_t queue_changes = 0, queue_bytes = 0;
    std::uint64_t slot_retained_wal_bytes = 0;
    double cutover_write_downtime_seconds = 0;
    /// The last (or running) cutover or rollback: id, kind, phase and each phase's duration.
    SwitchReport cutover;

    /// Errors by stage: source, decode, apply, copy, control.
    std::uint64_t errors_source = 0, errors_decode = 0, errors_apply = 0, errors_copy = 0, errors_control = 0;
    std::uint64_t reconnects_source = 0, reconnects_target = 0;
    std::uint64_t spill_errors = 0; ///< sessions ended because the spill directory failed

    /// Apply latency histogram: cumulative counts per k_latency_buckets bound, then +Inf (= count).
    std::array<std::uint64_t, k_latency_buckets.size()> latency_bucket_counts{};
    std::uint64_t latency_count = 0;
    double latency_sum = 0;

    /// Parallel apply: the workers and where batches spend their time.
    struct {
        int workers = 0;
        std::vector<std::string> worker_states;           ///< per worker, one of k_worker_states
        std::array<std::uint64_t, k_worker_states.size()> by_state{}; ///< workers per state
        std::uint64_t batches_dispatched = 0, batches_committed = 0, batches_chained = 0, batches_one_round_trip = 0,
                      batches_inline = 0;
        double wait_dispatch_seconds = 0, wait_dependency_seconds = 0, wait_commit_seconds = 0;
        std::uint64_t retries_conflict = 0, retries_blocked = 0;
        /// Target statements and the rows they carried, and compacted batches replayed
        /// uncompacted (changes received are changes_*).
        std::uint64_t statements = 0, rows_written = 0, compaction_fallbacks = 0;
    } apply;

    std::string last_error; ///< never contains secrets; kept after it is resolved
    std::string last_error_at; ///< when last_error happened (RFC 3339, UTC); empty when none
    /// The error the daemon is in now (failed, or retrying a session); empty once streaming again.
    std::string current_error;
    /// Selected source tables that are not replicated (yet), one line each with the reason and the fix.
    std::vector<std::string> tables_not_replicated;
    /// Indexes and constraints of replicated source tables that the target lacks, one line each
    /// with what happens to it; schema_blocking: those that refuse a cutover or rollback.
    std::vector<std::string> schema_differences, schema_blocking;
    /// Reasons /readyz is not ready (empty = ready).
    std::vector<std::string> not_ready_reasons;
    /// The last or running comparison (tables are left out here; GET /v1/verify has them).
    struct {
        std::string state = "none";
        std::uint64_t tables_total = 0, tables_match = 0, tables_mismatch = 0, tables_error = 0;
        std::uint64_t tables_done = 0, rows_compared = 0;
        double rows_per_second = 0;
    } verify;
};

/// Implemented by the daemon; called from control-plane threads.
class StatusProvider {
public:
    virtual ~StatusProvider() = default;
    [[nodiscard]] virtual StatusSnapshot snapshot() const = 0;
    /// True while the daemon's loops are alive (for /livez).
    [[nodiscard]] virtual bool alive() const = 0;
    /// Stop / restart applying. Idempotent; never blocks on PostgreSQL.
    virtual void pause() = 0;
    virtual void resume() = 0;
    /// Starts a comparison in the background: false when one is running already.
    virtual bool start_verify(bool checksums)
    {
        (void)checksums;
        return false;
    }
    [[nodiscard]] virtual VerifyReport verify_report() const { return {}; }
    /// Checks the preconditions of a cutover or rollback (`kind`) from the status alone and, when
    /// they hold, starts it in the background.
    virtual OperationStart start_switch(const std::string& kind) = 0;
    [[nodiscard]] virtual SwitchReport switch_report() const = 0;
    /// Ends the migration in the background: drops pgshift's slots, publications and origins,
    /// then the daemon exits 0.
    virtual OperationStart start_finish() = 0;
};

} // namespace pgshift::control
