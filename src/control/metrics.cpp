// Builds the SPEC section 4 metric families from a StatusSnapshot and serializes them.
//
// Design notes
// - The daemon's counters already live in atomics behind StatusProvider::snapshot(), so a
//   prometheus::Registry would only duplicate them. Instead each scrape builds
//   prometheus::MetricFamily values by hand and hands them to prometheus::TextSerializer:
//   the order of families and series is the order written here (stable for diffs and tests),
//   and labelled series exist whether or not they were ever incremented (prometheus-cpp never
//   renders an empty family, and a vanishing series breaks rate() and alerts).
// - TextSerializer does not escape HELP text and does not append "_total": every HELP string
//   here is plain ASCII without backslashes or newlines, and counter names carry the suffix.
// - LSNs are exported as byte offsets in a double: exact up to 2^53 bytes (8 PiB of WAL),
//   which no cluster reaches; differences between them stay meaningful.
#include "pgshift/control/metrics.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <prometheus/text_serializer.h>

#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

namespace pgshift::control {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

using Labels = std::initializer_list<std::pair<const char*, std::string_view>>;

class Exposition {
public:
    /// Starts a family; the series added next belong to it.
    MetricFamily& family(const char* name, const char* help, MetricType type)
    {
        families_.push_back(MetricFamily{name, help, type, {}});
        return families_.back();
    }

    void gauge(const char* name, const char* help, double value)
    {
        add_value(family(name, help, MetricType::Gauge), {}, value);
    }

    void counter(const char* name, const char* help, double value)
    {
        add_value(family(name, help, MetricType::Counter), {}, value);
    }

    static void add_value(MetricFamily& family, Labels labels, double value)
    {
        ClientMetric metric;
        for (const auto& [name, label_value] : labels)
            metric.label.push_back({name, std::string(label_value)});
        if (family.type == MetricType::Counter)
            metric.counter.value = value;
        else
            metric.gauge.value = value;
        family.metric.push_back(std::move(metric));
    }

    [[nodiscard]] std::string serialize() const { return prometheus::TextSerializer{}.Serialize(families_); }

private:
    std::vector<MetricFamily> families_;
};

double as_double(std::uint64_t v)
{
    return static_cast<double>(v);
}

double flag(bool b)
{
    return b ? 1.0 : 0.0;
}

} // namespace

std::string render_metrics(const StatusSnapshot& s, const std::string& version)
{
    Exposition out;

    auto& build = out.family("pgshift_build_info", "Build information; the value is always 1.", MetricType::Gauge);
    Exposition::add_value(build, {{"version", version}}, 1);

    auto& state = out.family("pgshift_state", "1 for the current daemon state, 0 for the others.", MetricType::Gauge);
    for (const char* name : k_states)
        Exposition::add_value(state, {{"state", name}}, flag(s.state == name));

    auto& direction = out.family("pgshift_direction",
                                 "1 for the current replication direction (forward: source to target; "
                                 "reverse: target to source after a cutover).",
                                 MetricType::Gauge);
    for (const char* name : {"forward", "reverse"})
        Exposition::add_value(direction, {{"direction", name}}, flag(s.direction == name));

    out.gauge("pgshift_paused", "1 while applying is paused by the operator.", flag(s.paused));
    out.gauge("pgshift_lag_bytes", "Source current WAL position minus the applied position, in bytes.",
              as_double(s.lag_bytes));
    out.gauge("pgshift_lag_seconds",
              "Seconds since the source commit of the oldest received but unapplied transaction; 0 when caught up.",
              s.lag_seconds);
    out.gauge("pgshift_source_lsn_bytes", "Current WAL end of the source server, as a byte offset.",
              as_double(s.source_lsn));
    out.gauge("pgshift_received_lsn_bytes", "Last WAL position received from the source, as a byte offset.",
              as_double(s.received_lsn));
    out.gauge("pgshift_applied_lsn_bytes", "Commit position of the last transaction applied, as a byte offset.",
              as_double(s.applied_lsn));
    out.gauge("pgshift_confirmed_lsn_bytes", "Flush position confirmed to the source slot, as a byte offset.",
              as_double(s.confirmed_lsn));
    out.counter("pgshift_wal_received_bytes_total", "Replication stream bytes received from the source.",
                as_double(s.wal_received_bytes));
    out.counter("pgshift_transactions_applied_total", "Source transactions committed on the target.",
                as_double(s.transactions_applied));

    auto& changes = out.family("pgshift_changes_applied_total", "Row changes applied, by operation.",
                               MetricType::Counter);
    Exposition::add_value(changes, {{"op", "insert"}}, as_double(s.changes_insert));
    Exposition::add_value(changes, {{"op", "update"}}, as_double(s.changes_update));
    Exposition::add_value(changes, {{"op", "delete"}}, as_double(s.changes_delete));
    Exposition::add_value(changes, {{"op", "truncate"}}, as_double(s.changes_truncate));

    out.gauge("pgshift_queue_changes", "Changes received but not yet applied.", as_double(s.queue_changes));
    out.gauge("pgshift_queue_bytes", "Memory held by queued changes, in bytes.", as_double(s.queue_bytes));

    // The snapshot already holds cumulative bucket counts; the serializer adds the +Inf bucket
    // from sample_count because the last explicit bound is finite.
    auto& latency = out.family("pgshift_apply_latency_seconds",
                               "Delay from source commit to target commit, per transaction.", MetricType::Histogram);
    {
        ClientMetric metric;
        metric.histogram.sample_count = s.latency_count;
        metric.histogram.sample_sum = s.latency_sum;
        for (std::size_t i = 0; i < k_latency_buckets.size(); ++i)
            metric.histogram.bucket.push_back({s.latency_bucket_counts[i], k_latency_buckets[i]});
        latency.metric.push_back(std::move(metric));
    }

    auto& errors = out.family("pgshift_errors_total", "Errors, by pipeline stage.", MetricType::Counter);
    Exposition::add_value(errors, {{"stage", "source"}}, as_double(s.errors_source));
    Exposition::add_value(errors, {{"stage", "decode"}}, as_double(s.errors_decode));
    Exposition::add_value(errors, {{"stage", "apply"}}, as_double(s.errors_apply));
    Exposition::add_value(errors, {{"stage", "copy"}}, as_double(s.errors_copy));
    Exposition::add_value(errors, {{"stage", "control"}}, as_double(s.errors_control));

    auto& reconnects = out.family("pgshift_reconnects_total", "Reconnect attempts, by endpoint.", MetricType::Counter);
    Exposition::add_value(reconnects, {{"endpoint", "source"}}, as_double(s.reconnects_source));
    Exposition::add_value(reconnects, {{"endpoint", "target"}}, as_double(s.reconnects_target));

    // pending is derived: the snapshot counts total, done and copying. Saturate rather than
    // wrap if a racy snapshot ever has done + copying > total.
    const auto& copy = s.initial_copy;
    const std::uint64_t started = copy.tables_done + copy.tables_copying;
    const std::uint64_t pending = copy.tables_total > started ? copy.tables_total - started : 0;
    auto& tables = out.family("pgshift_copy_tables", "Tables of the initial copy, by state.", MetricType::Gauge);
    Exposition::add_value(tables, {{"state", "pending"}}, as_double(pending));
    Exposition::add_value(tables, {{"state", "copying"}}, as_double(copy.tables_copying));
    Exposition::add_value(tables, {{"state", "done"}}, as_double(copy.tables_done));

    out.counter("pgshift_copy_rows_total", "Rows copied into the target (initial copy and tables that joined later).",
                as_double(copy.rows_copied));
    out.counter("pgshift_copy_bytes_total", "Bytes copied into the target (initial copy and tables that joined later).",
                as_double(copy.bytes_copied));
    out.gauge("pgshift_tables_not_replicated",
              "Selected source tables that are not replicated (no usable replica identity, missing on the target, ...); "
              "the reasons are in /v1/status.",
              as_double(s.tables_not_replicated.size()));
    out.gauge("pgshift_schema_differences",
              "Indexes and constraints of replicated source tables that the target lacks (built there with "
              "schema: copy); the list is in /v1/status.",
              as_double(s.schema_differences.size()));
    auto& workers = out.family("pgshift_apply_workers", "Apply workers, by what they do now.", MetricType::Gauge);
    for (std::size_t i = 0; i < k_worker_states.size(); ++i)
        Exposition::add_value(workers, {{"state", k_worker_states[i]}}, as_double(s.apply.by_state[i]));
    out.gauge("pgshift_apply_batches_in_flight",
              "Batches handed to workers and not committed yet: the parallelism apply achieves.",
              as_double(s.apply.batches_dispatched > s.apply.batches_committed
                            ? s.apply.batches_dispatched - s.apply.batches_committed
                            : 0));
    out.counter("pgshift_apply_batches_total",
                "Batches (consecutive source transactions applied as one target transaction) committed.",
                as_double(s.apply.batches_committed));
    out.counter("pgshift_apply_batches_chained_total",
                "Batches handed straight to the worker running the batch they wait for (a chain of dependent "
                "batches stays on one worker).",
                as_double(s.apply.batches_chained));
    out.counter("pgshift_apply_batches_one_round_trip_total",
                "Batches committed in the same round trip as their statements (every earlier batch had "
                "committed).",
                as_double(s.apply.batches_one_round_trip));
    out.counter("pgshift_apply_batches_inline_total",
                "Batches the scheduler applied itself on an idle worker's connection (nothing in flight, nothing "
                "queued: no hand-off to a worker thread).",
                as_double(s.apply.batches_inline));
    auto& waits = out.family("pgshift_apply_wait_seconds_total",
                             "Time batches waited: for a free worker (dispatch), for a conflicting earlier batch "
                             "(dependency), for their turn to commit (commit).",
                             MetricType::Counter);
    Exposition::add_value(waits, {{"stage", "dispatch"}}, s.apply.wait_dispatch_seconds);
    Exposition::add_value(waits, {{"stage", "dependency"}}, s.apply.wait_dependency_seconds);
    Exposition::add_value(waits, {{"stage", "commit"}}, s.apply.wait_commit_seconds);
    auto& retries = out.family("pgshift_apply_retries_total",
                               "Batches rolled back and run again after every earlier one: a conflict the keys did "
                               "not foresee, or an earlier batch blocked by this one's locks.",
                               MetricType::Counter);
    Exposition::add_value(retries, {{"reason", "conflict"}}, as_double(s.apply.retries_conflict));
    Exposition::add_value(retries, {{"reason", "blocked"}}, as_double(s.apply.retries_blocked));
    out.counter("pgshift_apply_statements_total",
                "Statements sent to the target (a multi-row statement or a COPY counts once); against "
                "pgshift_changes_applied_total it shows what compaction and multi-row statements save.",
                as_double(s.apply.statements));
    out.counter("pgshift_apply_rows_written_total",
                "Row operations the target executed after compaction (changes received are "
                "pgshift_changes_applied_total).",
                as_double(s.apply.rows_written));
    out.counter("pgshift_apply_compaction_fallbacks_total",
                "Compacted batches rolled back and replayed in source order, uncompacted (a unique violation "
                "or missing row in a transient state the source never had).",
                as_double(s.apply.compaction_fallbacks));
    out.gauge("pgshift_verify_running", "1 while a comparison of source and target runs (POST /v1/verify).",
              s.verify.state == "holding" || s.verify.state == "running" ? 1.0 : 0.0);
    auto& vt = out.family("pgshift_verify_tables",
                          "Tables of the last or running comparison, by result (pending includes running).",
                          MetricType::Gauge);
    const auto vdone = s.verify.tables_match + s.verify.tables_mismatch + s.verify.tables_error;
    Exposition::add_value(vt, {{"result", "pending"}},
                          as_double(s.verify.tables_total > vdone ? s.verify.tables_total - vdone : 0));
    Exposition::add_value(vt, {{"result", "match"}}, as_double(s.verify.tables_match));
    Exposition::add_value(vt, {{"result", "mismatch"}}, as_double(s.verify.tables_mismatch));
    Exposition::add_value(vt, {{"result", "error"}}, as_double(s.verify.tables_error));
    out.gauge("pgshift_verify_rows_compared", "Rows read on both sides by the last or running comparison.",
              as_double(s.verify.rows_compared));
    out.counter("pgshift_spill_errors_total",
                "Sessions ended because a transaction could not be written to the spill directory (apply.spill_dir).",
                as_double(s.spill_errors));
    out.gauge("pgshift_slot_retained_wal_bytes",
              "WAL the replication slot holds back on the source (current position minus restart_lsn), in bytes.",
              as_double(s.slot_retained_wal_bytes));
    out.gauge("pgshift_cutover_write_downtime_seconds",
              "Write downtime of the last cutover or rollback, from fence to the new primary being writable.",
              s.cutover_write_downtime_seconds);
    auto& phases = out.family("pgshift_cutover_phase_seconds",
                              "Seconds each phase of the last cutover or rollback took (0: not reached).",
                              MetricType::Gauge);
    for (const char* name : k_switch_phases) {
        double secs = 0;
        for (const auto& p : s.cutover.phases)
            if (p.name == name)
                secs = p.seconds;
        Exposition::add_value(phases, {{"phase", name}}, secs);
    }

    return out.serialize();
}

} // namespace pgshift::control
