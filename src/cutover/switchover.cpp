// Cutover and rollback (see switchover.hpp).
#include "pgshift/cutover/switchover.hpp"

#include "pgshift/apply/origins.hpp"
#include "pgshift/common/clock.hpp"
#include "pgshift/common/errors.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/apply/later_objects.hpp"
#include "pgshift/apply/table_names.hpp"
#include "pgshift/cutover/fence.hpp"
#include "pgshift/cutover/sequences.hpp"
#include "pgshift/reader/catalog.hpp"
#include "pgshift/verify/runner.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <set>
#include <stdexcept>
#include <thread>

namespace pgshift::cutover {

namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

double seconds_since(Steady::time_point t) { return std::chrono::duration<double>(Steady::now() - t).count(); }

std::unique_ptr<pg::Connection> open(const std::string& conninfo, const config::Config& cfg)
{
    return std::make_unique<pg::Connection>(
        pg::conninfo_with(conninfo, {{"application_name", "pgshift_" + cfg.name + "_cutover"}}));
}

/// The tables selected on a server, as SQL names.
std::vector<std::string> selected_sql(pg::Connection& c, const config::Config& cfg)
{
    std::vector<std::string> out;
    for (const auto& t : reader::select_tables(c, cfg.tables))
        out.push_back(t.sql());
    return out;
}

/// Refuses to switch while a selected table of the old primary is not in its publication: its
/// rows (all of them, or those since it left) are not on the new primary, and the verify step,
/// which compares published tables, would not notice. A table created on the old primary is in
/// this state until the table watch joins it; one that lost its replica identity, until it is
/// fixed and copied anew.
void check_replicated(pg::Connection& old, const config::Config& from)
{
    auto published = reader::published_tables(old, from.publication_name());
    std::string missing;
    int n = 0;
    for (const auto& t : reader::select_tables(old, from.tables))
        if (!published.count(t.display()) && ++n <= 5)
            missing += (missing.empty() ? "" : ", ") + t.display();
    if (n)
        throw std::runtime_error(
            std::to_string(n) + " selected table(s) of the old primary are not replicated: " + missing +
            (n > 5 ? ", ..." : "") +
            "; their rows are not all on the new primary (pgshift status lists why under tables_not_replicated: "
            "wait until the table joins, or add it to tables.exclude)");
}

/// Refuses to switch while the new primary lacks an index or constraint of the old primary's
/// replicated tables that enforces a rule (it would accept rows the old one refused), or, with
/// schema: copy, any of them (the schema follower is about to build it, and the application's
/// queries expect it) or still has a rule the old primary dropped (the follower is about to drop
/// it, and the application's writes would fail on it), or in either mode while a table's row-level
/// security differs (the new primary would show other rows). The status has the same list for the 412 (schema_follower.hpp); this is
/// the check at the switch, where a table locked on the new primary makes the catalog reads
/// wait, `lock_timeout` at most.
void check_later_objects(pg::Connection& old, pg::Connection& neu, const config::Config& from,
                         std::chrono::milliseconds lock_timeout)
{
    const bool builds = from.schema == config::SchemaMode::copy;
    std::string list;
    int n = 0;
    for (const auto& o : apply::schema_differences(old, neu, from.publication_name(), lock_timeout))
        if (o.blocks_switch(builds) && ++n <= 5)
            list += (list.empty() ? "" : ", ") + o.describe();
    if (n)
        throw std::runtime_error("the new primary differs from the old in " + std::to_string(n) +
                                 " index(es), constraint(s) or table(s)' row-level security: " + list + (n > 5 ? ", ..." : "") +
                                 " (status lists each under schema_differences, with what to do or that pgshift "
                                 "builds or drops it)");
}

/// The tables the new direction publishes at the switch.
std::vector<reader::SourceTable> publishable_now(pg::Connection& neu, pg::Connection& old, const config::Config& to,
                                                 const std::string& kind)
{
    // Only the tables the old primary has: the new stream starts at the slot's consistent point
    // without a copy, so a table made on the new primary alone (while it was the target) joins
    // through the new direction's table watch, with its rows copied (and, with schema: copy,
    // created on the old primary first); until then the next switch is refused for it.
    auto tables = reader::select_tables(neu, to.tables);
    std::vector<std::string> names;
    for (const auto& t : tables)
        names.push_back(t.sql());
    auto r = old.exec_params("SELECT x FROM unnest($1::text[]) x WHERE to_regclass(x) IS NULL",
                             {pg::text_array(names)});
    std::set<std::string> absent;
    for (int i = 0; i < r.rows(); ++i)
        absent.insert(r.str(i, 0));
    std::vector<reader::SourceTable> out;
    for (auto& t : tables)
        if (!absent.count(t.sql()))
            out.push_back(std::move(t));
        else
            spdlog::warn("{}: table {} exists on the new primary only: not published yet; it joins the new stream "
                         "with its rows once it exists on the old primary",
                         kind, t.display());
    return out;
}

/// The operator's commands see which way the switch goes.
std::map<std::string, std::string> command_env(const config::Config& from, const std::string& kind)
{
    return {{"PGSHIFT_MIGRATION", from.name},
            {"PGSHIFT_OPERATION", kind},
            {"PGSHIFT_OLD_PRIMARY", from.is_reverse() ? "target" : "source"},
            {"PGSHIFT_NEW_PRIMARY", from.is_reverse() ? "source" : "target"},
            {"PGSHIFT_OLD_PRIMARY_CONNINFO", config::redact_conninfo(from.source.conninfo)},
            {"PGSHIFT_NEW_PRIMARY_CONNINFO", config::redact_conninfo(from.target.conninfo)}};
}

/// Lifts whatever fence `from`'s upstream has (read_only or unfence_command).
void lift(const config::Config& from, const std::string& kind, std::chrono::milliseconds timeout)
{
    switch (from.cutover.fence) {
    case config::FenceMode::read_only:
        lift_read_only(from.source.conninfo, from.name);
        break;
    case config::FenceMode::command:
        if (!from.cutover.unfence_command.empty())
            run_command("unfence_command", from.cutover.unfence_command, command_env(from, kind), timeout);
        break;
    case config::FenceMode::none:
        break;
    }
}

control::SwitchReport to_report(const Record& r)
{
    control::SwitchReport out;
    out.id = r.op_id;
    out.kind = r.kind;
    out.phase = r.phase;
    out.started_at = r.started_at;
    out.fenced_at = r.fenced_at;
    out.finished_at = r.finished_at;
    out.final_lsn = r.final_lsn;
    out.error = r.error;
    out.write_downtime_seconds = r.write_downtime_seconds;
    return out;
}

} // namespace

Switchover::Switchover(const config::Config& base, bool reverse_now, Hooks hooks)
    : base_(base),
      reverse_now_(reverse_now),
      from_(reverse_now ? base.reversed() : base),
      to_(reverse_now ? base : base.reversed()),
      hooks_(std::move(hooks)),
      kind_(reverse_now ? "rollback" : "cutover")
{
    if (const char* stall = std::getenv("PGSHIFT_TEST_CUTOVER_STALL"))
        test_stall_ = stall;
}

void Switchover::persist() { write_record(*home_, base_.name, rec_); }

void Switchover::check_time() const
{
    if (auto why = hooks_.interrupted(); !why.empty())
        throw std::runtime_error(why);
    if (Steady::now() > deadline_)
        throw std::runtime_error("cutover.timeout_seconds (" + std::to_string(static_cast<int>(base_.cutover.timeout_seconds)) +
                                 " s) passed");
}

void Switchover::phase(const std::string& name)
{
    auto now = Steady::now();
    if (!phase_.empty()) {
        double took = std::chrono::duration<double>(now - phase_started_).count();
        spdlog::info("{}: {} took {:.3f} s", kind_, phase_, took);
        hooks_.report([&](control::SwitchReport& r) { r.phases.push_back({phase_, took}); });
    }
    phase_ = name;
    phase_started_ = now;
    rec_.phase = name;
    persist();
    hooks_.report([&](control::SwitchReport& r) {
        r.phase = name;
        if (fenced_at_)
            r.write_downtime_seconds = seconds_since(*fenced_at_);
    });
    spdlog::info("{}: {}", kind_, name);
    stall(name);
}

void Switchover::stall(const std::string& point)
{
    // PGSHIFT_TEST_CUTOVER_STALL=point[:seconds] (tests only): wait there, so that a test can act
    // (kill -9, write) while the operation is in that state.
    auto colon = test_stall_.find(':');
    if (test_stall_.substr(0, colon) != point)
        return;
    double secs = colon == std::string::npos ? 60 : std::atof(test_stall_.c_str() + colon + 1);
    spdlog::warn("{}: PGSHIFT_TEST_CUTOVER_STALL: waiting {} s at {} (a test hook)", kind_, secs, point);
    auto until = Steady::now() + std::chrono::milliseconds(static_cast<long long>(secs * 1000));
    while (Steady::now() < until && hooks_.interrupted().empty()) {
        hooks_.beat();
        std::this_thread::sleep_for(50ms);
    }
}

void Switchover::fence()
{
    const auto& c = base_.cutover;
    fence_started_ = true;
    // Write downtime counts from here: clients may wait (a pooler's PAUSE, the fence's lock)
    // from the moment the fence starts going up.
    fenced_at_ = Steady::now();
    rec_.fenced_at = now_rfc3339();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Steady::now());
    switch (c.fence) {
    case config::FenceMode::read_only: {
        auto old = open(from_.source.conninfo, base_);
        auto tables = selected_sql(*old, from_);
        int ended = fence_read_only(from_.source.conninfo, base_.name, tables, deadline_,
                                    [this] { return !hooks_.interrupted().empty(); });
        spdlog::info("{}: {} table(s) on the old primary ({}) refuse writes now{}", kind_, tables.size(),
                     reverse_now_ ? "target" : "source",
                     ended ? " (" + std::to_string(ended) + " session(s) in the way were ended)" : "");
        break;
    }
    case config::FenceMode::command:
        run_command("fence_command", c.fence_command, command_env(from_, kind_), left);
        break;
    case config::FenceMode::none:
        spdlog::warn("{}: cutover.fence is none: pgshift does not stop writes on the old primary; a write "
                     "committed there once its stream has stopped is not carried over",
                     kind_);
        break;
    }
    hooks_.report([&](control::SwitchReport& r) { r.fenced_at = rec_.fenced_at; });
}

void Switchover::drain()
{
    auto old = open(from_.source.conninfo, base_);
    // Again behind the fence: a table created since the first look is caught here.
    check_replicated(*old, from_);
    auto final_lsn = Lsn::parse(old->exec("SELECT pg_current_wal_lsn()").get(0, 0));
    if (!final_lsn)
        throw std::runtime_error("pg_current_wal_lsn() returned no position");
    rec_.final_lsn = final_lsn->str();
    persist();
    hooks_.report([&](control::SwitchReport& r) { r.final_lsn = rec_.final_lsn; });
    // Apply holds at F; a transaction committing after F tells it when everything before arrived.
    std::lock_guard owner(hooks_.hold.owner); // (a comparison of the follower's may hold it for seconds)
    struct Release {
        apply::Hold& h;
        ~Release() { h.at.store(0, std::memory_order_release); }
    } release{hooks_.hold};
    hooks_.hold.at.store(final_lsn->value(), std::memory_order_release);
    old->exec_params("SELECT pg_logical_emit_message(true, 'pgshift_cutover', $1)", {final_lsn->str()});
    while (hooks_.hold.reached.load(std::memory_order_acquire) != final_lsn->value()) {
        check_time();
        hooks_.beat();
        std::this_thread::sleep_for(2ms);
    }
    spdlog::info("{}: everything up to the old primary's final position {} is applied", kind_, final_lsn->str());
    // Behind the fence and the drain, so that a table locked on the new primary (DDL, a stuck
    // apply) holds this up no longer than the deadline.
    check_later_objects(*old, *open(from_.target.conninfo, base_), from_,
                        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Steady::now()));
}

void Switchover::sync()
{
    auto old = open(from_.source.conninfo, base_);
    auto neu = open(from_.target.conninfo, base_);
    std::set<std::string> schemas;
    for (const auto& t : reader::select_tables(*old, from_.tables))
        schemas.insert(t.schema);
    std::vector<std::string> missing;
    int n = sync_sequences(*old, *neu, {schemas.begin(), schemas.end()}, missing);
    spdlog::info("{}: {} sequence(s) copied to the new primary", kind_, n);
    if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing)
            list += (list.empty() ? "" : ", ") + m;
        spdlog::warn("{}: {} sequence(s) do not exist on the new primary and were not copied: {}", kind_,
                     missing.size(), list);
    }
}

void Switchover::verify()
{
    auto& v = hooks_.verifier;
    if (!v.start(base_.cutover.verify == config::VerifyMode::checksums))
        throw std::runtime_error("a comparison is running already");
    for (;;) {
        auto state = v.report().state;
        if (state != "holding" && state != "running")
            break;
        try {
            check_time();
        } catch (...) {
            v.cancel();
            throw;
        }
        hooks_.beat();
        std::this_thread::sleep_for(10ms);
    }
    v.wait();
    auto r = v.report();
    if (r.state == "match") {
        spdlog::info("{}: verify ({}) matches: {} table(s), {} rows", kind_,
                     r.checksums ? "checksums" : "counts", r.tables.size(), r.rows_compared);
        return;
    }
    if (r.state != "mismatch")
        throw std::runtime_error("verify failed: " + r.error);
    std::string list;
    int n = 0;
    for (const auto& t : r.tables)
        if (t.result != "match") {
            ++n;
            if (n <= 5)
                list += (list.empty() ? "" : ", ") + t.table + " (" + t.result + ")";
        }
    throw std::runtime_error("verify found " + std::to_string(n) + " table(s) that differ: " + list +
                             (n > 5 ? ", ..." : "") + " (GET /v1/verify has the details)");
}

void Switchover::prepare_new_direction()
{
    // The new primary publishes; do no harm there either.
    auto neu = open(to_.source.conninfo, base_);
    if (auto wal = neu->exec("SHOW wal_level").str(0, 0); wal != "logical")
        throw std::runtime_error("the new primary's wal_level is '" + wal + "': the reverse stream (what makes a "
                                 "rollback possible) needs 'logical' (set it and restart that server)");
    auto old = open(to_.target.conninfo, base_);
    auto tables = publishable_now(*neu, *old, to_, kind_);
    std::string problems;
    for (const auto& t : tables)
        if (!t.identity_problem.empty())
            problems += "; " + t.identity_problem;
    if (!problems.empty())
        throw std::runtime_error("publishing these tables on the new primary would break writes there" + problems);
    reader::prepare_publication(*neu, to_.publication_name(), tables);
    // A slot an earlier attempt left behind is dropped: it is older than the fence.
    if (!reader::drop_slot_when_idle(*neu, to_.slot_name(), 5s))
        throw std::runtime_error("replication slot " + to_.slot_name() + " on the new primary is in use");
    auto created = neu->exec_params("SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                                    {to_.slot_name()});
    slot_created_ = true;
    auto start = Lsn::parse(created.get(0, 0));
    if (!start)
        throw std::runtime_error("pg_create_logical_replication_slot returned no position");
    // The new stream's target (the old primary) starts applying at the slot's consistent point.
    if (auto problem = apply::origin_shortfall(*old, to_, base_.apply.workers))
        throw std::runtime_error(*problem);
    for (int k = 0; k < base_.apply.workers; ++k)
        old->exec_params("SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
                         {to_.origin_name(k)});
    old->exec_params("SELECT pg_replication_origin_advance(roname, $1::pg_lsn) FROM pg_replication_origin "
                     "WHERE roname ~ $2",
                     {start->str(), to_.origin_pattern()});
    rec_.ready = true;
    persist();
    stall("switching_ready");
    spdlog::info("{}: slot {} on the new primary ({}) streams from {}; origins {}..{} on the old primary start there",
                 kind_, to_.slot_name(), reverse_now_ ? "source" : "target", start->str(), to_.origin_name(0),
                 to_.origin_name(base_.apply.workers - 1));
}

void Switchover::run_switch_command()
{
    const auto& cmd = base_.cutover.switch_command;
    if (cmd.empty())
        return;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Steady::now());
    run_command("switch_command", cmd, command_env(from_, kind_), std::max(left, std::chrono::milliseconds(1000)));
}

void Switchover::commit()
{
    double took = seconds_since(phase_started_);
    rec_.reverse = !reverse_now_;
    rec_.phase = "done";
    rec_.finished_at = now_rfc3339();
    rec_.write_downtime_seconds = fenced_at_ ? seconds_since(*fenced_at_) : 0;
    persist(); // the commit point
    hooks_.committed();
    // The new primary was fenced if it was the old primary of an earlier cutover: it takes
    // writes from now on (its slot exists, so none is missed).
    if (base_.cutover.fence == config::FenceMode::read_only) {
        try {
            lift_read_only(from_.target.conninfo, base_.name);
        } catch (const std::exception& e) {
            rec_.error = "the new primary still refuses writes: lifting its fence failed: " + std::string(e.what()) +
                         " (run CREATE OR REPLACE FUNCTION pgshift.fence_" + base_.name +
                         "() ... RETURN NULL there, or restart pgshift, which lifts it)";
            spdlog::error("{}: {}", kind_, rec_.error);
            persist();
        }
    }
    rec_.write_downtime_seconds = fenced_at_ ? seconds_since(*fenced_at_) : 0;
    hooks_.report([&](control::SwitchReport& r) {
        r.phases.push_back({phase_, took});
        r.phase = "done";
        r.finished_at = rec_.finished_at;
        r.write_downtime_seconds = rec_.write_downtime_seconds;
        r.error = rec_.error;
    });
    spdlog::info("{}: switching took {:.3f} s", kind_, took);
    spdlog::info("{} done in {:.3f} s, write downtime {:.3f} s: the {} is the primary now and the {} receives its "
                 "changes (direction {})",
                 kind_, seconds_since(started_), rec_.write_downtime_seconds, reverse_now_ ? "source" : "target",
                 reverse_now_ ? "target" : "source", rec_.reverse ? "reverse" : "forward");
}

void Switchover::abort(const std::string& reason)
{
    hooks_.hold.at.store(0, std::memory_order_release);
    spdlog::error("{} aborted in {}: {}; undoing it", kind_, phase_, reason);
    std::string error = phase_ + ": " + reason;
    bool lifted = true;
    if (slot_created_) {
        try {
            auto neu = open(to_.source.conninfo, base_);
            if (!reader::drop_slot_when_idle(*neu, to_.slot_name(), 5s))
                throw std::runtime_error("it is in use");
        } catch (const std::exception& e) {
            spdlog::warn("{}: could not drop slot {} on the new primary: {} (the next start drops it)", kind_,
                         to_.slot_name(), e.what());
        }
    }
    if (fence_started_) {
        lifted = false;
        for (int attempt = 1; attempt <= 3 && !lifted; ++attempt) {
            try {
                lift(from_, kind_, 30s);
                lifted = true;
                spdlog::info("{}: the old primary accepts writes again", kind_);
            } catch (const std::exception& e) {
                spdlog::error("{}: lifting the fence failed (attempt {}): {}", kind_, attempt, e.what());
                if (attempt == 3)
                    error += "; LIFTING THE FENCE FAILED, the old primary still refuses writes: " + std::string(e.what());
                std::this_thread::sleep_for(1s);
            }
        }
    }
    rec_.phase = lifted ? "aborted" : "failed";
    rec_.error = error;
    rec_.ready = false;
    rec_.finished_at = now_rfc3339();
    rec_.write_downtime_seconds = fenced_at_ ? seconds_since(*fenced_at_) : 0;
    try {
        persist();
    } catch (const std::exception& e) {
        spdlog::error("{}: could not record the outcome on the target: {}", kind_, e.what());
    }
    hooks_.report([&](control::SwitchReport& r) {
        r.phases.push_back({phase_, seconds_since(phase_started_)});
        r.phase = rec_.phase;
        r.error = error;
        r.finished_at = rec_.finished_at;
        r.write_downtime_seconds = rec_.write_downtime_seconds;
    });
}

bool Switchover::run()
{
    started_ = Steady::now();
    deadline_ = started_ + std::chrono::milliseconds(static_cast<long long>(base_.cutover.timeout_seconds * 1000));
    phase_ = "checking";
    phase_started_ = started_;
    try {
        home_ = open(base_.target.conninfo, base_);
        rec_ = read_record(*home_, base_.name);
        hooks_.report([&](control::SwitchReport& r) {
            rec_.op_id = r.id;
            rec_.started_at = r.started_at;
        });
        rec_.kind = kind_;
        rec_.ready = false;
        rec_.fenced_at = rec_.finished_at = rec_.final_lsn = rec_.error = "";
        rec_.write_downtime_seconds = 0;
        spdlog::info("{} {} started: old primary {}, new primary {}", kind_, rec_.op_id,
                     reverse_now_ ? "target" : "source", reverse_now_ ? "source" : "target");
        stall("checking");
        check_replicated(*open(from_.source.conninfo, base_), from_);
        check_time();
        phase("fencing");
        fence();
        check_time();
        phase("draining");
        drain();
        if (base_.cutover.sync_sequences) {
            check_time();
            phase("syncing_sequences");
            sync();
        }
        if (base_.cutover.verify != config::VerifyMode::none) {
            check_time();
            phase("verifying");
            verify();
        }
        check_time();
        phase("switching");
        prepare_new_direction();
        check_time();
        run_switch_command();
        commit();
        return true;
    } catch (const std::exception& e) {
        abort(e.what());
        return false;
    }
}

void Switchover::complete()
{
    try {
        auto old = open(from_.source.conninfo, base_);
        if (reader::drop_slot_when_idle(*old, from_.slot_name(), 10s))
            spdlog::info("{}: dropped slot {} of the previous direction", kind_, from_.slot_name());
        else
            spdlog::warn("{}: slot {} of the previous direction is still in use; the next start drops it", kind_,
                         from_.slot_name());
    } catch (const std::exception& e) {
        spdlog::warn("{}: could not drop slot {} of the previous direction: {}; the next start drops it", kind_,
                     from_.slot_name(), e.what());
    }
}

std::optional<bool> Switchover::recover(const config::Config& base, const ReportFn& report)
{
    auto home = open(base.target.conninfo, base);
    auto rec = read_record(*home, base.name);
    if (rec.finished)
        return std::nullopt;
    if (!terminal(rec.phase)) {
        const auto from = rec.reverse ? base.reversed() : base;
        const auto to = from.reversed();
        if (rec.phase == "switching" && rec.ready) {
            spdlog::warn("{} {} was interrupted after the new primary was ready: completing it (the old primary "
                         "stays fenced)",
                         rec.kind, rec.op_id);
            rec.error = "completed at start-up: pgshift stopped during switching";
            if (!base.cutover.switch_command.empty()) {
                try {
                    run_command("switch_command", base.cutover.switch_command, command_env(from, rec.kind), 60s);
                } catch (const std::exception& e) {
                    rec.error += "; switch_command failed: " + std::string(e.what()) +
                                 ": clients may still point to the old primary, which refuses writes";
                    spdlog::error("{}", rec.error);
                }
            }
            rec.reverse = !rec.reverse;
            rec.phase = "done";
        } else {
            spdlog::warn("{} {} was interrupted in {}: undoing it (the old primary accepts writes again, streaming "
                         "goes on as before)",
                         rec.kind, rec.op_id, rec.phase);
            auto neu = open(to.source.conninfo, base);
            if (!reader::drop_slot_when_idle(*neu, to.slot_name(), 10s))
                throw SourceError("slot " + to.slot_name() + " of an interrupted " + rec.kind + " is in use", true);
            lift(from, rec.kind, 60s);
            rec.error = "interrupted in " + rec.phase + " by a stop of pgshift; undone at start-up";
            rec.phase = "aborted";
        }
        rec.ready = false;
        rec.finished_at = now_rfc3339();
        write_record(*home, base.name, rec);
    }
    // The primary (the upstream of the direction streaming now) takes writes: a completed
    // operation may have stopped before lifting its fence.
    if (base.cutover.fence == config::FenceMode::read_only) {
        const auto& primary = rec.reverse ? base.target : base.source;
        if (read_only_fenced(primary.conninfo, base.name)) {
            spdlog::warn("the {} is the primary but was still fenced: lifting its fence", rec.reverse ? "target" : "source");
            lift_read_only(primary.conninfo, base.name);
        }
    }
    // A slot of the direction that is not streaming is a leftover (an operation that could not
    // drop it): it would only hold WAL.
    const auto idle = rec.reverse ? base : base.reversed();
    try {
        auto up = open(idle.source.conninfo, base);
        auto r = up->exec_params("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", {idle.slot_name()});
        if (r.rows() > 0 && reader::drop_slot_when_idle(*up, idle.slot_name(), 10s))
            spdlog::info("dropped slot {} of the direction not streaming", idle.slot_name());
    } catch (const std::exception& e) {
        spdlog::warn("could not look for a leftover slot {}: {}", idle.slot_name(), e.what());
    }
    if (rec.reverse && base.cutover.fence == config::FenceMode::read_only &&
        !read_only_fenced(base.source.conninfo, base.name))
        spdlog::warn("direction is reverse but the source is not fenced: an application write there is not carried "
                     "to the target (the primary now)");
    report([&](control::SwitchReport& r) { r = to_report(rec); });
    return rec.reverse;
}

void Switchover::finish(const config::Config& base)
{
    for (const auto& d : {base, base.reversed()}) {
        auto up = open(d.source.conninfo, base);
        if (!reader::drop_slot_when_idle(*up, d.slot_name(), 30s))
            throw std::runtime_error("replication slot " + d.slot_name() + " is still in use");
        up->exec("DROP PUBLICATION IF EXISTS " + pg::quote_ident(d.publication_name()));
        auto down = open(d.target.conninfo, base);
        down->exec_params("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name ~ $1 "
                          "AND pid <> pg_backend_pid()",
                          {d.origin_pattern()});
        auto deadline = Steady::now() + 30s;
        for (;;) {
            try {
                auto r = down->exec_params("SELECT count(pg_replication_origin_drop(roname)) FROM pg_replication_origin "
                                           "WHERE roname ~ $1",
                                           {d.origin_pattern()});
                if (r.str(0, 0) != "0")
                    spdlog::info("finish: dropped {} replication origin(s) {} on the {}", r.str(0, 0),
                                 d.origin_pattern(), d.is_reverse() ? "source" : "target");
                break;
            } catch (const pg::PgError& e) {
                if (Steady::now() > deadline) // an ended session may hold its origin for a moment
                    throw;
                std::this_thread::sleep_for(200ms);
            }
        }
        apply::TableNames::forget(*down, d.slot_name());
        spdlog::info("finish: slot and publication {} dropped on the {}", d.slot_name(),
                     d.is_reverse() ? "target" : "source");
    }
    auto home = open(base.target.conninfo, base);
    auto rec = read_record(*home, base.name);
    rec.finished = true;
    write_record(*home, base.name, rec);
}

} // namespace pgshift::cutover
