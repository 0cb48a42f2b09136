// The daemon's main loop: checks before any side effect, sessions of (reader thread, apply
// thread), the monitor thread, backoff, shutdown. Signals: signals.hpp; systemd's watchdog: watchdog.hpp.
//
// Design notes
// - Thread map: the main thread owns configuration, signals (blocked everywhere and taken with
//   sigtimedwait, so no handler runs in a random thread) and the session lifecycle; each session
//   has one reader thread (the replication connection) and one apply thread (the target
//   connection); the monitor thread lives as long as the daemon (source WAL position, both
//   servers' reachability, whether the walsender sees the reader's replies, tables that appear
//   on the source); the schema follower's thread too (indexes and constraints made on the source
//   later, schema_follower.hpp). No detached threads, except the one that waits for a second SIGTERM after
//   the first (it ends the process).
// - A session (run_session) is four steps, each in one place: recover_direction (once per
//   daemon), Startup (checks, then side effects), run_copy when an initial copy is due, and
//   stream (the main thread's loop, with switch_over for a cutover or rollback). The session's
//   two threads, their stop order and the classification of what they threw are
//   SessionThreads'.
// - Signals are taken on every path: while streaming, while backing off (whatever the delay),
//   between the blocking steps of a session's start-up, and while waiting for `resume`.
// - SIGHUP reloads the file on the main thread, between operations (a cutover holds it back
//   until it ended): all or nothing. A file with any problem changes nothing; otherwise the
//   reloadable keys are applied to the daemon's two Config objects (forward and reverse),
//   member by member, and the other changed keys are named as needing a restart. A session
//   works on a copy of its direction's Config taken when it starts, so its threads never read
//   a value that changes under them (apply.on_missing_row waits for the next session); what the
//   main thread reads between operations (cutover.*, reconnect.*), the token and the log
//   settings change at once. Streaming is never interrupted.
// - Stop: apply finishes the batches it started; a statement still running on the target
//   k_cancel_after later (a lock another session holds) is cancelled with PQcancel, and the
//   worker treats the cancel as the stop (rollback, no error). A second SIGTERM exits at once.
// - systemd: READY=1 once streaming (or copying), STATUS= lines (every k_status_interval while
//   streaming), RELOADING=1/READY=1 around a reload, STOPPING=1, and WATCHDOG=1 from the main
//   thread's loops only while Liveness (state.hpp) finds the reader and apply healthy. Steps
//   that block the main thread on a server for long (start-up, index builds, a cutover) ping
//   from a Watchdog::Busy helper thread meanwhile, which also keeps /livez alive.
// - Do no harm: a session starts with read-only checks on both servers (wal_level, every
//   selected table's replica identity, the slot, the origin); pgshift's first side effect (the
//   publication, then the origin, then the slot) comes only once they all passed. A selected
//   table whose publication would make the source refuse UPDATE/DELETE refuses the start.
// - A session ends on a signal (graceful: apply finishes its transaction and records durable
//   progress, then the reader reports it to the source and closes the stream) or on an error.
//   Retryable errors (connection loss, server restart, slot still held by an old walsender, a
//   full spill directory) start a new session after an exponential backoff; a new session
//   re-reads the durable position from the target, so whatever was in memory is received again.
// - Startup order matters for exactly-once: the target origin is read before the slot is
//   looked at; a new slot's consistent point initialises the origin before streaming starts.
// - Initial copy (rule 11): the copy's state on the target (copy_state.hpp) decides. A copy is
//   needed when none completed and the target has no progress; it is recorded as running
//   *before* the slot is created with an exported snapshot, so a crash anywhere after that is
//   seen as an interrupted copy. initial_copy.workers sessions import the snapshot; once all
//   did, the reader streams from the consistent point while the copy runs: the queue holds
//   the changes back (bounded, spilling) and apply starts only once the copy is done and its
//   indexes exist. An interrupted copy has lost its snapshot (it died with the walsender
//   session that exported it): the next session says so and, when the slot and its
//   consistent point are intact, keeps the tables that were done and copies the others under
//   the snapshot of a temporary slot, the reader skipping their changes below its LSN;
//   otherwise it drops the slot, empties the tables the copy filled and copies again from a
//   new slot.
#include "pgshift/daemon/run.hpp"
#include "pgshift/cutover/switchover.hpp"
#include "pgshift/verify/runner.hpp"

#include "pgshift/apply/engine.hpp"
#include "pgshift/common/logging.hpp"
#include "pgshift/copy/copy_state.hpp"
#include "pgshift/copy/schema_copy.hpp"
#include "pgshift/copy/snapshot_copy.hpp"
#include "pgshift/daemon/backoff.hpp"
#include "pgshift/daemon/reload.hpp"
#include "pgshift/daemon/signals.hpp"
#include "pgshift/control/server.hpp"
#include "pgshift/daemon/state.hpp"
#include "pgshift/daemon/schema_follower.hpp"
#include "pgshift/daemon/table_watch.hpp"
#include "pgshift/daemon/watchdog.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/message_log.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"
#include "pgshift/reader/catalog.hpp"
#include "pgshift/reader/reader.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <unistd.h>

namespace pgshift::daemon {

namespace {

using std::chrono::milliseconds;

/// How a session ended: `blocked` = the target needs the operator (a table or column missing, a
/// row that should be there is not); the daemon stays up, reports `failed`, and tries again on
/// `pgshift resume` (POST /v1/resume) or a restart. Nothing is lost: the slot keeps the changes.
/// `switched` = a cutover or rollback committed: the next session streams the other way at once.
/// `finished` = the migration is over (pgshift finish, now or earlier): exit 0.
enum class SessionEnd { stopped, retry, blocked, fatal, config, switched, finished };

/// How long a stop lets apply finish the batches it started before it cancels their statements.
constexpr auto k_cancel_after = std::chrono::seconds(5);
/// How often a STATUS= line for `systemctl status` is sent while streaming.
constexpr auto k_status_interval = std::chrono::seconds(5);

/// Free space below which the spill directory earns a warning at start.
constexpr std::uint64_t k_spill_free_warning = std::uint64_t(1) << 30;

/// Classifies an exception that ended a session, counts it and logs it once. `source_side`
/// says which endpoint a bare PgError came from.
SessionEnd classify(const std::exception_ptr& ep, DaemonState& state, bool source_side)
{
    auto& stats = state.stats();
    auto record = [&](const std::string& msg, std::atomic<std::uint64_t>& counter) {
        spdlog::error("{}", msg);
        state.set_last_error(msg);
        counter.fetch_add(1);
    };
    // `upstream`: the side the stream comes from (the source, or the target after a cutover).
    auto side = [&](bool upstream) { return std::string(upstream != state.reverse() ? "source: " : "target: "); };
    auto lost = [&](bool upstream) {
        state.set_upstream_endpoint(upstream, false, 0);
        (upstream ? stats.reconnects_source : stats.reconnects_target).fetch_add(1);
    };
    try {
        std::rethrow_exception(ep);
    } catch (const ConfigError& e) {
        record(std::string("configuration error: ") + e.what(), stats.errors_control);
        return SessionEnd::config;
    } catch (const SpillError& e) {
        record(std::string("spill directory: ") + e.what() + "; retrying after a backoff (free space there, or "
                                                              "point apply.spill_dir at a larger disk)",
               stats.spill_errors);
        return SessionEnd::retry;
    } catch (const SourceError& e) {
        record(side(true) + e.what(), stats.errors_source);
        if (e.retryable())
            lost(true);
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const TargetError& e) {
        record(side(false) + e.what(), stats.errors_apply);
        state.set_violation(e.violation());
        if (e.retryable())
            lost(false);
        return e.retryable() ? SessionEnd::retry : SessionEnd::blocked;
    } catch (const pg::PgError& e) {
        record(side(source_side) + e.what(),
               source_side ? stats.errors_source : stats.errors_apply);
        if (e.retryable())
            lost(source_side);
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const ProtocolError& e) {
        record(std::string("protocol error: ") + e.what(), stats.errors_decode);
        return SessionEnd::fatal;
    } catch (const std::exception& e) {
        record(std::string("internal error: ") + e.what(), stats.errors_source);
        return SessionEnd::fatal;
    }
}

/// Every few seconds, on ordinary connections of its own: the upstream's WAL position and the
/// slot's retained WAL (keepalives only carry what was sent), whether the reader's standby
/// replies reach the upstream's walsender (for the watchdog, Liveness), whether each server
/// answers, and (once the publication exists) tables that appeared on the upstream. The
/// upstream is the source, or the target after a cutover (`base` and `reversed` are the two
/// directions' configurations; only keys a reload never changes are read here). Failures here never end a session: the reader and apply notice real
/// connection loss themselves.
void monitor(const config::Config& base, const config::Config& reversed, DaemonState& state,
             const std::atomic<bool>& publication_ready, const std::atomic<bool>& stop)
{
    std::unique_ptr<pg::Connection> source, target;
    TableWatch forward_watch(base, state), reverse_watch(reversed, state);
    std::string last_reply; // "<walsender pid>/<its last reply time>" at the last look
    auto probe = [&](std::unique_ptr<pg::Connection>& conn, const std::string& conninfo, bool is_source) {
        try {
            if (!conn || !conn->is_ok()) {
                conn = std::make_unique<pg::Connection>(pg::conninfo_with(
                    conninfo, {{"application_name", "pgshift_" + base.name + "_monitor"}}));
                // It idles between looks: a server's idle_session_timeout would end it every
                // time and make the server look unreachable for a moment.
                pg::no_version_timeouts(*conn);
            }
            state.set_endpoint(is_source, true, conn->server_version());
            return true;
        } catch (const std::exception& e) {
            spdlog::debug("monitor: {} not reachable: {}", is_source ? "source" : "target", e.what());
            state.set_endpoint(is_source, false, 0);
            conn.reset();
            return false;
        }
    };
    while (!stop.load()) {
        const bool reverse = state.reverse();
        const auto& active = reverse ? reversed : base;
        bool source_up = probe(source, base.source.conninfo, true);
        bool target_up = probe(target, base.target.conninfo, false);
        auto& down = reverse ? source : target;
        if (down && (reverse ? source_up : target_up)) {
            try {
                down->exec("SELECT 1");
            } catch (const std::exception&) {
                down.reset();
            }
        }
        auto& up = reverse ? target : source;
        if (up && (reverse ? target_up : source_up)) {
            try {
                // reply_time is the client's send time of the last standby reply the walsender
                // processed: only whether it changes is used (the two clocks may differ).
                const std::string reply_sql =
                    up->server_version() >= 120000
                        ? "(SELECT r.pid || '/' || coalesce(r.reply_time::text, '') FROM pg_replication_slots s "
                          " JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)"
                        : "NULL::text";
                auto r = up->exec_params(
                    "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, "
                    "coalesce((SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                    "          WHERE slot_name = $1), 0), " +
                        reply_sql,
                    {active.slot_name()});
                if (state.reverse() == reverse) { // positions of the two servers do not compare
                    state.set_source_position(std::stoull(r.str(0, 0)), std::stoull(r.str(0, 1)));
                    if (!r.is_null(0, 2)) {
                        auto reply = r.str(0, 2);
                        state.observe_stream_reply(reply != last_reply);
                        last_reply = std::move(reply);
                    }
                }
                if (publication_ready.load())
                    (reverse ? reverse_watch : forward_watch).poll(*up);
            } catch (const std::exception& e) {
                spdlog::debug("monitor: {}", e.what());
                up.reset();
            }
        }
        for (int i = 0; i < 20 && !stop.load(); ++i)
            std::this_thread::sleep_for(milliseconds(100));
    }
}

/// The read-only checks of the source before a session's first side effect.
struct SourcePlan {
    std::vector<reader::SourceTable> tables;
    reader::SlotInfo slot;
};

SourcePlan check_source(const config::Config& cfg, Lsn durable, bool publication_ready)
{
    pg::Connection source(cfg.source.conninfo);
    reader::require_logical_wal(source);
    SourcePlan plan{reader::select_tables(source, cfg.tables), reader::read_slot(source, cfg.slot_name())};
    if (plan.tables.empty())
        throw ConfigError("no source table matches tables.include/tables.exclude");
    if (plan.slot.exists && plan.slot.wal_status == "lost")
        throw SourceError("replication slot " + cfg.slot_name() +
                              " was invalidated by the source (wal_status = lost: the WAL it needed was "
                              "removed, see max_slot_wal_keep_size); changes were lost, so the migration must "
                              "start over from a fresh copy. pgshift never recreates the slot by itself",
                          false);
    if (!plan.slot.exists && !durable.is_zero())
        throw SourceError("the target's origin has applied up to " + durable.str() + " but the slot " +
                              cfg.slot_name() +
                              " no longer exists on the source; changes since then cannot be recovered. "
                              "Start the migration over (drop the target's origin and tables)",
                          false);
    if (!publication_ready) {
        // Once per daemon, as `pgshift check` reports them: what the operator has to carry over.
        for (const auto& n : reader::not_carried(source, cfg.tables))
            spdlog::warn("not migrated: {}", n.message);
        // When streaming resumes, the publication holds what is replicated, and the start sets it
        // to the selected tables (prepare_publication). Two kinds stay out:
        // - Lose nothing: a table not in it yet (created, or given its identity, while pgshift was
        //   stopped) would stream only the rows written after the start; it joins through the
        //   table watch instead, with its rows copied.
        // - Do no harm: publishing a table without a usable replica identity makes the source
        //   refuse the application's UPDATE and DELETE on it; one an earlier run published and
        //   that lost its identity since does that already, so the start removes it.
        // Any other table without identity refuses the start, with nothing created.
        const bool resuming = !durable.is_zero() && reader::publication_exists(source, cfg.publication_name());
        const auto published = reader::published_tables(source, cfg.publication_name());
        std::string problems;
        std::vector<reader::SourceTable> keep;
        for (auto& t : plan.tables) {
            const bool in_publication = published.count(t.display()) > 0;
            if (resuming && !in_publication) {
                spdlog::info("table {} is not in publication {}: it joins once streaming, with its rows copied",
                             t.display(), cfg.publication_name());
                continue;
            }
            if (!t.identity_problem.empty()) {
                if (resuming && t.refuses_writes)
                    spdlog::error("table {} lost its replica identity while published, so the source refuses the "
                                  "application's UPDATE and DELETE on it: removing it from publication {}; it is "
                                  "not replicated until its identity is back and its target table is emptied (then "
                                  "it is copied anew)",
                                  t.display(), cfg.publication_name());
                else
                    problems += "\n  " + t.identity_problem;
                continue;
            }
            keep.push_back(std::move(t));
        }
        if (!problems.empty())
            throw ConfigError("refusing to start: publishing these tables would break writes on the source "
                              "(nothing was created or changed):" + problems);
        plan.tables = std::move(keep);
        if (plan.tables.empty())
            throw ConfigError("no selected source table can be replicated now (see the errors above)");
    }
    return plan;
}

/// Everything a session needs to know about the initial copy before its first side effect.
struct CopyDecision {
    bool needed = false;
    copy::CopyRun previous; ///< the run recorded on the target (exists = false when none)
};

/// Reads the copy's state and decides; read-only.
CopyDecision decide_copy(const config::Config& cfg, pg::Connection& target, Lsn durable)
{
    CopyDecision c;
    c.previous = copy::read_run(target, cfg.name);
    if (c.previous.exists && !c.previous.done() && !cfg.initial_copy.enabled)
        throw ConfigError("the initial copy started on " + c.previous.started_at +
                          " was interrupted, so the target holds an incomplete copy, but initial_copy.enabled is "
                          "false now: set it to true to copy again from a new slot (or empty the target, drop the "
                          "slot " + c.previous.slot + " and the row in pgshift.copy_runs to start over)");
    if (!cfg.initial_copy.enabled)
        return c;
    if (c.previous.exists) {
        c.needed = !c.previous.done();
    } else if (!durable.is_zero()) {
        spdlog::info("initial copy: not needed, the target's origins already hold progress ({}): this migration "
                     "started without an initial copy",
                     durable.str());
    } else {
        c.needed = true;
    }
    return c;
}

/// The checks of a copy that need both servers and change nothing: no stray slot, the schema
/// (schema: verify), the target tables empty (unless the interrupted copy filled them).
void check_copy(const config::Config& cfg, const CopyDecision& c, const std::vector<reader::SourceTable>& tables,
                const reader::SlotInfo& slot, pg::Connection& target)
{
    if (slot.exists && !c.previous.exists)
        throw SourceError("the initial copy needs a new replication slot (its exported snapshot is what the copy "
                          "reads), but slot " + cfg.slot_name() + " already exists on the source and the target "
                          "has neither progress nor a copy of this migration: a leftover of an earlier run? Drop "
                          "it on the source (SELECT pg_drop_replication_slot('" + cfg.slot_name() + "')), or set "
                          "initial_copy.enabled: false if the target already holds the source's rows",
                          false);
    pg::Connection source(cfg.source.conninfo);
    auto problems = copy::check_schema(cfg, source, target, tables);
    if (!problems.empty()) {
        std::string all;
        for (const auto& p : problems)
            all += "\n  " + p;
        throw ConfigError(std::string("schema: ") + (cfg.schema == config::SchemaMode::verify ? "verify" : "copy") +
                          ": the target does not match the source (nothing was created or changed):" + all);
    }
    std::set<std::string> ours(c.previous.table_sql.begin(), c.previous.table_sql.end());
    std::string full;
    for (const auto& t : tables) {
        if (ours.count(t.sql()))
            continue;
        auto r = target.exec("SELECT to_regclass(" + pg::quote_literal(t.sql()) + ") IS NOT NULL");
        if (r.get(0, 0) != "t")
            continue; // created by schema: copy
        if (target.exec("SELECT EXISTS (SELECT 1 FROM " + t.sql() + ")").get(0, 0) == "t")
            full += "\n  " + t.display();
    }
    if (!full.empty())
        throw ConfigError("the initial copy fills empty target tables only, and these already hold rows "
                          "(nothing was created or changed):" + full +
                          "\nEmpty them on the target (TRUNCATE), exclude them (tables.exclude), or set "
                          "initial_copy.enabled: false if the target already holds the source's rows");
}

/// Drops the slot of an interrupted copy, waiting briefly for the walsender of the run that
/// died to let go of it.
void drop_slot(const config::Config& cfg)
{
    pg::Connection source(cfg.source.conninfo);
    if (!reader::drop_slot_when_idle(source, cfg.slot_name(), std::chrono::seconds(10)))
        throw SourceError("replication slot " + cfg.slot_name() + " of the interrupted copy is still in use by "
                          "a walsender; retrying", true);
    spdlog::info("dropped replication slot {} of the interrupted copy", cfg.slot_name());
}

/// Empties the target tables an interrupted copy filled, after ending its sessions there.
void empty_copied_tables(const config::Config& cfg, pg::Connection& target, const copy::CopyRun& previous,
                         const std::set<std::string>& keep = {})
{
    target.exec_params("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name ~ $1 "
                       "AND pid <> pg_backend_pid()",
                       {"^pgshift_" + cfg.name + "_copy[0-9]+$"});
    std::string list;
    std::size_t n = 0;
    for (const auto& t : previous.table_sql)
        if (!keep.count(t) &&
            target.exec("SELECT to_regclass(" + pg::quote_literal(t) + ") IS NOT NULL").get(0, 0) == "t") {
            list += (list.empty() ? "" : ", ") + t;
            ++n;
        }
    if (list.empty())
        return;
    target.exec("SET lock_timeout = '60s'");
    target.exec("TRUNCATE " + list);
    target.exec("RESET lock_timeout");
    spdlog::info("emptied the {} table(s) the interrupted copy had not finished", n);
}

std::string mib(std::uint64_t bytes)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

/// One progress line: tables, share of the heap, rates, time left.
void log_copy_progress(const copy::CopyProgress& p)
{
    auto t = p.totals();
    double pct = t.pages ? 100.0 * static_cast<double>(t.pages_done) / static_cast<double>(t.pages) : 0;
    double secs = std::max(t.seconds, 0.001);
    std::string left = "time left unknown yet";
    if (t.pages_done > 0 && t.pages >= t.pages_done)
        left = "about " + std::to_string(static_cast<long long>(
                              secs * static_cast<double>(t.pages - t.pages_done) / static_cast<double>(t.pages_done) +
                              0.5)) +
               " s left";
    spdlog::info("initial copy: {}/{} tables done, {} copying; {:.0f}% of {} of heap; {} rows ({}) copied; {}/s, {:.0f} "
                 "rows/s; {}",
                 t.done, t.tables, t.copying, pct, mib(t.pages * 8192), t.rows, mib(t.bytes),
                 mib(static_cast<std::uint64_t>(static_cast<double>(t.bytes) / secs)),
                 static_cast<double>(t.rows) / secs, left);
    auto status = "STATUS=initial copy: " + std::to_string(t.done) + "/" + std::to_string(t.tables) + " tables, " +
                  std::to_string(static_cast<int>(pct)) + "%, " + left;
    sd_notify(0, status.c_str());
}

/// "streaming (forward), lag 0.3 s, 1234 txns applied": the STATUS= line `systemctl status` shows.
std::string status_line(const DaemonState& state)
{
    auto s = state.snapshot();
    return fmt::format("{} ({}), lag {:.1f} s, {} txns applied", s.state, s.direction, s.lag_seconds,
                       s.transactions_applied);
}

/// Everything one session shares with the daemon's lifetime.
struct Daemon {
    /// The forward direction's configuration. Owned by run(); a SIGHUP changes its reloadable
    /// keys, on the main thread, never during a cutover (Signals::Defer): a session works on a
    /// copy taken when it starts, so only what is read here, between operations, changes live.
    const config::Config& base;
    const config::Config& reversed; ///< the reverse direction (after a cutover); idem
    Signals& signals;
    DaemonState& state;
    std::atomic<bool>& publication_ready;
    verify::Runner& forward_verifier;
    verify::Runner& reverse_verifier;
    Watchdog& watchdog;
    bool notified_ready = false;
    bool recovered = false; ///< the persisted direction was read (and an interrupted operation settled)
    /// Reads the running session's threads for the watchdog; empty between sessions.
    std::function<SessionSample()> session_sample{};

    /// The main thread's loops call this often (at least every 200 ms): /livez and the watchdog.
    void beat()
    {
        state.beat();
        watchdog.tick(session_sample);
    }

    [[nodiscard]] bool reverse() const { return state.reverse(); }
    [[nodiscard]] const config::Config& active() const { return reverse() ? reversed : base; }
    [[nodiscard]] verify::Runner& verifier() const { return reverse() ? reverse_verifier : forward_verifier; }
    [[nodiscard]] cutover::ReportFn report() const
    {
        return [&state = state](const std::function<void(control::SwitchReport&)>& change) {
            state.update_switch(change);
        };
    }
};

/// Drops both directions' slots, publications and origins (pgshift finish); the session's
/// threads have stopped.
SessionEnd finish_migration(Daemon& d)
{
    Watchdog::Busy finishing(d.watchdog, d.state);
    d.state.set_state(State::stopping);
    spdlog::info("finish: the migration is final; dropping pgshift's slots, publications and origins on both "
                 "servers");
    try {
        cutover::Switchover::finish(d.base);
    } catch (const std::exception& e) {
        spdlog::error("finish failed: {}; nothing else changed, run pgshift finish again", e.what());
        d.state.set_last_error(std::string("finish: ") + e.what());
        d.state.end_operation();
        return SessionEnd::retry;
    }
    spdlog::info("finish: done. {}", d.base.cutover.fence == config::FenceMode::read_only && d.reverse()
                                         ? "The source stays fenced (DROP SCHEMA pgshift CASCADE there lifts it)."
                                         : "");
    sd_notify(0, "STATUS=migration finished");
    return SessionEnd::finished;
}

/// The direction to stream and the outcome of an operation a crash interrupted: read once per
/// daemon, before anything else. A SessionEnd when no session may start.
std::optional<SessionEnd> recover_direction(Daemon& d)
{
    if (d.recovered)
        return std::nullopt;
    try {
        auto reverse = cutover::Switchover::recover(d.base, d.report());
        if (!reverse) {
            spdlog::info("migration {} was finished (pgshift finish): nothing to do", d.base.name);
            return SessionEnd::finished;
        }
        d.state.set_reverse(*reverse);
        d.recovered = true;
        if (*reverse)
            spdlog::info("direction is reverse (after a cutover): streaming from the target to the source");
    } catch (...) {
        return classify(std::current_exception(), d.state, false);
    }
    return std::nullopt;
}

/// What a session's start-up decided, for the phases after it.
struct SessionPlan {
    Lsn start;                                    ///< where the stream starts
    bool copy = false;                            ///< an initial copy runs in this session
    std::unique_ptr<pg::Connection> copy_target;  ///< the copy's state and schema work on the target
    std::vector<reader::SourceTable> tables;      ///< selected
    std::vector<reader::SourceTable> copy_tables; ///< to copy in this session
    std::string snapshot;                         ///< the exported snapshot they are copied under
    Lsn sync_lsn;                                 ///< the LSN that snapshot stands for
    /// A resumed copy's temporary slot: its snapshot lives as long as this connection.
    std::unique_ptr<pg::ReplicationConnection> exporter;
};

/// A session's start-up, one step after the other, each blocking on a server: read-only checks
/// on both servers first, then the side effects in the order exactly-once needs (publication,
/// origins, the copy's record and schema, the slot; see the design notes above). A signal is
/// looked at between the checks. A bare PgError is blamed on the server of the step that threw
/// it (source_side_, for classify()).
class Startup {
public:
    Startup(Daemon& d, const config::Config& cfg, apply::Engine& engine, reader::Reader& reader,
            copy::SchemaCopy& schema_copy)
        : d_(d), cfg_(cfg), engine_(engine), reader_(reader), schema_copy_(schema_copy)
    {
    }

    /// Fills `plan`; a SessionEnd when the session ends before streaming (a stop, an error).
    std::optional<SessionEnd> run(SessionPlan& plan)
    {
        try {
            check_target(plan);
            if (d_.signals.pending())
                return SessionEnd::stopped;
            check_source_side(plan);
            if (d_.signals.pending())
                return SessionEnd::stopped;
            publish();
            engine_.ensure_origins();
            record_table_names();
            if (plan.copy)
                prepare_copy(plan);
            open_stream(plan);
        } catch (...) {
            return classify(std::current_exception(), d_.state, source_side_);
        }
        return std::nullopt;
    }

private:
    /// The target's durable progress and the copy's recorded state (read-only).
    void check_target(SessionPlan& plan)
    {
        durable_ = engine_.connect();
        d_.state.set_upstream_endpoint(false, true, engine_.server_version());
        plan.copy_target = std::make_unique<pg::Connection>(
            pg::conninfo_with(cfg_.target.conninfo, {{"application_name", "pgshift_" + cfg_.name + "_copy"},
                                                     {"client_encoding", "UTF8"},
                                                     // it also builds the indexes after the copy
                                                     {"options", std::string(pg::k_no_timeouts) + " " +
                                                                     pg::k_writable}}));
        pg::no_version_timeouts(*plan.copy_target);
        copy_ = decide_copy(cfg_, *plan.copy_target, durable_);
        plan.copy = copy_.needed;
    }

    /// The source (wal_level, tables, slot) and, for a copy, the schema on both servers (read-only).
    void check_source_side(SessionPlan& plan)
    {
        source_side_ = true;
        // An unfinished copy's origin progress (its old consistent point) means nothing: the
        // copy starts over from a new slot.
        source_ = check_source(cfg_, copy_.needed ? Lsn() : durable_, d_.publication_ready.load());
        plan.tables = source_.tables;
        source_side_ = false;
        if (copy_.needed)
            check_copy(cfg_, copy_, source_.tables, source_.slot, *plan.copy_target);
    }

    /// The first side effect: the publication, once per daemon.
    void publish()
    {
        if (d_.publication_ready.load())
            return;
        source_side_ = true;
        pg::Connection source(cfg_.source.conninfo);
        reader::prepare_publication(source, cfg_.publication_name(), source_.tables);
        d_.publication_ready.store(true);
        source_side_ = false;
    }

    /// The target's name of each published table, for renames on the source (table_names.hpp).
    void record_table_names()
    {
        source_side_ = true;
        pg::Connection source(cfg_.source.conninfo);
        auto published = apply::published_relations(source, cfg_.publication_name());
        source_side_ = false;
        engine_.record_table_names(published, !source_.slot.exists);
    }

    /// The copy's tables, schema and record on the target, before the slot (copy_state.hpp). An
    /// interrupted copy whose slot and consistent point are intact keeps the tables it
    /// finished, and the others are copied under a new snapshot; otherwise the copy starts over
    /// from a new slot.
    void prepare_copy(SessionPlan& plan)
    {
        const auto& prev = copy_.previous;
        resume_ = prev.exists && !prev.consistent_point.is_zero() && source_.slot.exists &&
                  durable_ == prev.consistent_point && !prev.tables_done.empty();
        if (resume_) {
            for (const auto& t : source_.tables)
                if (!prev.tables_done.count(t.display()))
                    plan.copy_tables.push_back(t);
            spdlog::warn("the initial copy started {} (attempt {}) was interrupted before it finished; its snapshot "
                         "is gone (an exported snapshot lives only as long as the session that exported it). The {} "
                         "table(s) it finished are kept and receive the changes from {} on; the {} other(s) are "
                         "emptied and copied under a new snapshot",
                         prev.started_at, prev.attempts, source_.tables.size() - plan.copy_tables.size(),
                         prev.consistent_point.str(), plan.copy_tables.size());
            empty_copied_tables(cfg_, *plan.copy_target, prev, {prev.done_sql.begin(), prev.done_sql.end()});
        } else {
            plan.copy_tables = source_.tables;
            if (prev.exists) {
                spdlog::warn("the initial copy started {} (attempt {}) was interrupted before it finished; its "
                             "snapshot is gone (an exported snapshot lives only as long as the session that "
                             "exported it), so the copy starts over from a new slot: the {} table(s) it filled are "
                             "emptied and copied again",
                             prev.started_at, prev.attempts, prev.table_sql.size());
                if (source_.slot.exists) {
                    source_side_ = true;
                    drop_slot(cfg_);
                    source_side_ = false;
                }
                empty_copied_tables(cfg_, *plan.copy_target, prev);
            }
        }
        {
            pg::Connection source(cfg_.source.conninfo);
            schema_copy_.before_data(source, *plan.copy_target, plan.copy_tables);
        }
        std::vector<std::pair<std::string, std::string>> names;
        for (const auto& t : source_.tables)
            names.emplace_back(t.display(), t.sql());
        if (resume_)
            copy::resume_run(*plan.copy_target, cfg_.name, names);
        else
            copy::begin_run(*plan.copy_target, cfg_.name, cfg_.slot_name(), names);
    }

    /// Connects the reader and decides where the stream starts: a resumed copy's consistent
    /// point (with a temporary slot's snapshot for the tables it copies again), a new slot (with
    /// an exported snapshot for a copy; its consistent point initialises the origin), or the
    /// durable progress of the existing one.
    void open_stream(SessionPlan& plan)
    {
        source_side_ = true;
        reader_.connect();
        d_.state.set_upstream_endpoint(true, true, reader_.server_version());
        const auto& prev = copy_.previous;
        std::map<std::string, Lsn> skip; // tables whose changes below an LSN are dropped
        if (resume_) {
            plan.start = prev.consistent_point;
            if (!plan.copy_tables.empty()) {
                // A temporary slot only for its snapshot and the LSN it stands for; it goes away
                // with this connection, once the copy sessions imported the snapshot.
                plan.exporter = std::make_unique<pg::ReplicationConnection>(cfg_.source.conninfo,
                                                                            "pgshift_" + cfg_.name + "_resync");
                // Named after this process: a killed run's temporary slot may linger for a moment.
                auto created = plan.exporter->create_slot(
                    "pgshift_" + cfg_.name + "_rs_" + std::to_string(::getpid()), true, true);
                plan.snapshot = created.snapshot_name;
                plan.sync_lsn = created.consistent_point;
                for (const auto& t : plan.copy_tables)
                    skip[t.display()] = plan.sync_lsn;
                spdlog::info("initial copy: {} table(s) are copied under snapshot {} at {}; their changes below it "
                             "are skipped",
                             plan.copy_tables.size(), plan.snapshot, plan.sync_lsn.str());
            }
        } else if (plan.copy) {
            auto created = reader_.create_slot_with_snapshot();
            plan.start = created.consistent_point;
            plan.snapshot = created.snapshot_name;
            plan.sync_lsn = plan.start;
            source_side_ = false;
            copy::set_consistent_point(*plan.copy_target, cfg_.name, plan.start);
            engine_.advance_origin(plan.start);
        } else if (!source_.slot.exists) {
            plan.start = reader_.create_slot();
            source_side_ = false;
            engine_.advance_origin(plan.start);
        } else {
            plan.start = durable_.is_zero() ? source_.slot.confirmed_flush : durable_;
        }
        // Tables copied under a later snapshot than the stream's start (a resumed copy, now or
        // in an earlier run) skip the changes their copy holds.
        for (const auto& [t, lsn] : prev.tables_done)
            if (plan.start < lsn)
                skip.emplace(t, lsn);
        reader_.skip_changes_below(skip);
        source_side_ = false;
        if (!plan.copy)
            engine_.begin_session(plan.start);
    }

    Daemon& d_;
    const config::Config& cfg_;
    apply::Engine& engine_;
    reader::Reader& reader_;
    copy::SchemaCopy& schema_copy_;
    Lsn durable_;          ///< the target's durable progress (origins)
    CopyDecision copy_;    ///< the initial copy: needed, and what an earlier run left
    SourcePlan source_;    ///< the selected tables and the slot
    bool resume_ = false;  ///< an interrupted copy is resumed (prepare_copy)
    bool source_side_ = false;
};

/// A session's reader and apply threads. Started once the start-up is done (the reader alone
/// while a copy runs); stopped apply first, so that its final durable position is what the
/// reader reports. Apply finishes the batches it has started; one that still runs
/// k_cancel_after later (waiting for a lock another session holds on the target, or just
/// long) has its statement cancelled, is rolled back and is received again at the next start:
/// a stop never waits for systemd's SIGKILL.
class SessionThreads {
public:
    SessionThreads(reader::Reader& reader, apply::Engine& engine, DaemonState& state, const queue::Progress& progress)
        : reader_(reader), engine_(engine), state_(state), progress_(progress)
    {
    }
    SessionThreads(const SessionThreads&) = delete;
    SessionThreads& operator=(const SessionThreads&) = delete;
    ~SessionThreads() { stop(); }

    void start_reader(Lsn start)
    {
        reader_running_.store(true);
        reader_thread_ = std::thread([this, start] {
            try {
                reader_.stream(start, stop_reader_);
            } catch (...) {
                reader_error_ = std::current_exception();
                failed_.store(true);
            }
            reader_running_.store(false);
        });
    }
    void start_apply()
    {
        apply_running_.store(true);
        apply_thread_ = std::thread([this] {
            try {
                engine_.run(stop_apply_, state_.paused_flag());
            } catch (...) {
                apply_error_ = std::current_exception();
                failed_.store(true);
            }
            apply_running_.store(false);
        });
    }
    [[nodiscard]] bool reader_started() const { return reader_thread_.joinable(); }
    /// A thread ended with an error.
    [[nodiscard]] bool failed() const { return failed_.load(); }

    /// Apply first, then the reader; returns once both threads have ended. Idempotent.
    void stop()
    {
        stop_apply_.store(true);
        if (apply_thread_.joinable()) {
            const auto cancel_at = std::chrono::steady_clock::now() + k_cancel_after;
            bool cancelled = false;
            while (apply_running_.load()) {
                state_.beat();
                if (!cancelled && std::chrono::steady_clock::now() >= cancel_at) {
                    cancelled = true;
                    auto n = engine_.cancel_statements();
                    spdlog::warn("stop: apply is still busy on the target {} s after the stop was asked (waiting for "
                                 "a lock another session holds?); cancelled {} running statement(s): their "
                                 "transactions are rolled back and applied again at the next start",
                                 std::chrono::duration_cast<std::chrono::seconds>(k_cancel_after).count(), n);
                }
                std::this_thread::sleep_for(milliseconds(20));
            }
            apply_thread_.join();
        }
        stop_reader_.store(true);
        if (reader_thread_.joinable())
            reader_thread_.join();
    }

    /// After stop(): a thread threw.
    [[nodiscard]] bool errors() const { return apply_error_ || reader_error_; }
    /// After stop(): how the session ends, from what the threads threw (each classified and
    /// logged once); `stopped` for a requested stop that no error overrides.
    SessionEnd end(bool stop_requested)
    {
        auto end = SessionEnd::retry;
        for (auto [ep, from_source] : {std::pair{apply_error_, false}, std::pair{reader_error_, true}})
            if (ep) {
                auto e = classify(ep, state_, from_source);
                if (e != SessionEnd::retry)
                    end = e;
            }
        return stop_requested && end == SessionEnd::retry ? SessionEnd::stopped : end;
    }

    /// What the watchdog looks at (atomics only).
    [[nodiscard]] SessionSample sample() const
    {
        SessionSample s;
        s.reader_running = reader_running_.load();
        s.apply_running = apply_running_.load();
        s.received = progress_.received.load();
        s.pushed_seq = progress_.pushed_seq.load();
        s.applied_seq = progress_.applied_seq.load();
        auto& stats = state_.stats();
        s.batches_committed = stats.batches_committed.load();
        const auto workers = std::min(static_cast<std::size_t>(std::max(stats.workers.load(), 0)),
                                      stats.worker_state.size());
        constexpr auto executing = static_cast<std::uint8_t>(apply::WorkerState::executing);
        for (std::size_t k = 0; k < workers; ++k)
            s.statement_on_target = s.statement_on_target || stats.worker_state[k].load() == executing;
        s.apply_on_hold = state_.paused_flag().load() || state_.hold().at.load() != 0;
        s.reply_sampled_ms = state_.stream_reply_sampled_ms();
        s.reply_changed_ms = state_.stream_reply_changed_ms();
        return s;
    }

private:
    reader::Reader& reader_;
    apply::Engine& engine_;
    DaemonState& state_;
    const queue::Progress& progress_;
    std::atomic<bool> stop_apply_{false}, stop_reader_{false}, failed_{false};
    std::atomic<bool> reader_running_{false}, apply_running_{false};
    std::exception_ptr apply_error_, reader_error_; // written by their thread, read after join
    std::thread apply_thread_, reader_thread_;
};

/// The initial copy's phase of a session (rule 11): the sessions import the snapshot; once all
/// did, the reader streams (its changes held back in the queue); once every table is copied and
/// indexed, apply starts. A SessionEnd when the session ends here (a stop, an error).
std::optional<SessionEnd> run_copy(Daemon& d, const config::Config& cfg, SessionPlan& plan,
                                   copy::SchemaCopy& schema_copy, apply::Engine& engine, SessionThreads& threads)
{
    auto& state = d.state;
    state.set_state(State::copying);
    if (!d.notified_ready) {
        sd_notify(0, "READY=1\nSTATUS=initial copy");
        d.notified_ready = true;
    }
    auto progress = std::make_shared<copy::CopyProgress>();
    state.set_copy(progress);
    std::vector<copy::CopyTable> list;
    for (const auto& t : plan.copy_tables)
        list.push_back({t.display(), t.sql()});
    std::exception_ptr copy_error;
    bool copy_side_source = false;
    bool stop_requested = false;
    {
        copy::SnapshotCopy copier(cfg, list, plan.snapshot, progress,
                                  [&state](std::uint64_t rows, std::uint64_t bytes) { state.add_copied(rows, bytes); });
        auto report_finished = [&] {
            for (const auto* t : copier.take_finished_tables()) {
                copy::table_done(*plan.copy_target, cfg.name, t->display, t->rows.load(), t->bytes.load(),
                                 plan.sync_lsn);
                spdlog::info("initial copy: table {} done, {} rows ({})", t->display, t->rows.load(),
                             mib(t->bytes.load()));
            }
        };
        try {
            copy_side_source = true;
            copier.start();
            copy_side_source = false;
            auto last_log = std::chrono::steady_clock::now();
            while (!copier.finished() && !threads.failed()) {
                d.beat();
                if (d.signals.wait(milliseconds(200))) {
                    stop_requested = true;
                    sd_notify(0, "STOPPING=1");
                    break;
                }
                if (!threads.reader_started() && copier.imported()) {
                    spdlog::info("initial copy: all {} session(s) imported the snapshot; streaming from {} "
                                 "meanwhile, changes are held back until the copy is done",
                                 cfg.initial_copy.workers, plan.start.str());
                    threads.start_reader(plan.start);
                }
                report_finished();
                if (std::chrono::steady_clock::now() - last_log >= std::chrono::seconds(5)) {
                    log_copy_progress(*progress);
                    last_log = std::chrono::steady_clock::now();
                }
            }
            copier.stop();
            copier.join();
            plan.exporter.reset(); // its temporary slot goes with it
            if (!stop_requested && !threads.failed()) {
                if (!threads.reader_started())
                    threads.start_reader(plan.start); // every session imported (they all finished without error)
                report_finished();
                log_copy_progress(*progress);
                // Index builds on large tables take as long as they take.
                Watchdog::Busy indexing(d.watchdog, state);
                copy::set_run_state(*plan.copy_target, cfg.name, "indexing");
                {
                    pg::Connection source(cfg.source.conninfo);
                    schema_copy.after_data(source, *plan.copy_target, plan.tables);
                }
                copy::set_run_state(*plan.copy_target, cfg.name, "done");
                auto t = progress->totals();
                spdlog::info("initial copy done: {} table(s), {} rows, {} copied in {:.1f} s, then the index "
                             "step; applying the changes made since {}",
                             t.tables, t.rows, mib(t.bytes), t.seconds, plan.start.str());
                engine.begin_session(plan.start);
                threads.start_apply();
            }
        } catch (...) {
            copy_error = std::current_exception();
        }
    }
    if (!copy_error && !stop_requested && !threads.failed())
        return std::nullopt;
    threads.stop();
    auto end = threads.end(stop_requested);
    if (copy_error) {
        state.count_copy_error();
        auto e = classify(copy_error, state, copy_side_source);
        if (end == SessionEnd::retry || end == SessionEnd::stopped)
            end = e;
    }
    if (stop_requested && end == SessionEnd::retry)
        end = SessionEnd::stopped;
    if (end != SessionEnd::stopped)
        spdlog::error("the initial copy did not finish; the next attempt starts it over from a new slot");
    return end;
}

/// A cutover or rollback, on the main thread while the session keeps streaming
/// (switchover.hpp). Its steps may block longer than the watchdog allows (fence and switch
/// commands), and a SIGHUP waits until it ended: it reads the cutover settings all along. True
/// when it committed: the old direction's threads have stopped (apply recorded its final
/// progress, the reader confirmed it), its slot is gone, and the next session streams the other
/// way. `stop_requested` is set when a stop signal arrived meanwhile.
bool switch_over(Daemon& d, SessionThreads& threads, const std::string& request, bool& stop_requested)
{
    auto& state = d.state;
    Signals::Defer no_reload(d.signals);
    Watchdog::Busy switching(d.watchdog, state);
    state.set_state(request == "cutover" ? State::cutting_over : State::rolling_back);
    sd_notify(0, ("STATUS=" + request + " running").c_str());
    cutover::Hooks hooks{[&]() -> std::string {
                             if (!stop_requested && d.signals.pending())
                                 stop_requested = true;
                             if (stop_requested)
                                 return "pgshift is stopping";
                             if (threads.failed())
                                 return "the streaming session failed (see the log)";
                             return "";
                         },
                         state.hold(),
                         d.verifier(),
                         [&d] { d.beat(); },
                         d.report(),
                         [&state] {
                             state.set_source_position(0, 0); // the other server's positions from now on
                             state.set_reverse(!state.reverse());
                         }};
    cutover::Switchover op(d.base, d.reverse(), std::move(hooks));
    const bool committed = op.run();
    if (committed) {
        threads.stop();
        op.complete();
        d.publication_ready.store(false);
    }
    state.end_operation();
    return committed;
}

/// Streams until a stop, an error, `finish` or a committed cutover/rollback; the main thread
/// meanwhile beats, takes signals and runs the operations asked for over HTTP.
SessionEnd stream(Daemon& d, SessionThreads& threads)
{
    auto& state = d.state;
    state.set_state(State::streaming);
    state.clear_current_error();
    if (!d.notified_ready) {
        sd_notify(0, "READY=1\nSTATUS=streaming");
        d.notified_ready = true;
    }
    bool stop_requested = false;
    auto last_status = std::chrono::steady_clock::now();
    while (!threads.failed()) {
        d.beat();
        if (d.signals.wait(milliseconds(50))) {
            stop_requested = true;
            sd_notify(0, "STOPPING=1");
            break;
        }
        if (std::chrono::steady_clock::now() - last_status >= k_status_interval) {
            last_status = std::chrono::steady_clock::now();
            sd_notify(0, ("STATUS=" + status_line(state)).c_str());
        }
        auto request = state.take_request();
        if (request == "finish") {
            threads.stop();
            if (threads.errors()) {
                state.end_operation();
                return threads.end(false);
            }
            return finish_migration(d);
        }
        if (request != "cutover" && request != "rollback")
            continue;
        if (switch_over(d, threads, request, stop_requested))
            return SessionEnd::switched;
        if (stop_requested) {
            sd_notify(0, "STOPPING=1");
            break;
        }
        state.set_state(State::streaming);
        sd_notify(0, "STATUS=streaming");
        last_status = std::chrono::steady_clock::now();
    }
    threads.stop();
    return threads.errors() ? threads.end(stop_requested) : SessionEnd::stopped;
}

/// One session: start-up, the initial copy when one is due, then streaming.
SessionEnd run_session(Daemon& d)
{
    auto& state = d.state;
    // The start-up blocks on both servers, step after step (each bounded by its timeouts, all
    // together not by the watchdog's).
    std::optional<Watchdog::Busy> starting(std::in_place, d.watchdog, state);
    if (auto end = recover_direction(d))
        return *end;
    // A copy: a SIGHUP may change the live configuration's reloadable keys while this
    // session's threads read theirs (apply.on_missing_row takes effect with the next session).
    const config::Config cfg = d.active();
    state.set_verifier(&d.verifier());
    // Entries are capped too (a transaction costs at least a few hundred bytes of accounting).
    auto max_entries = std::clamp<std::size_t>(cfg.apply.max_queue_bytes / 1024, 1024, std::size_t(1) << 20);
    auto queue = std::make_shared<queue::TxnQueue>(cfg.apply.max_queue_bytes, max_entries);
    auto progress = std::make_shared<queue::Progress>(max_entries);
    state.set_session({progress, queue});
    apply::Engine engine(cfg, *queue, *progress, state.stats(), &state.hold());
    reader::Reader reader(cfg, *queue, *progress, state.stats());
    copy::SchemaCopy schema_copy(cfg); // schema: copy's one dump of the source's schema
    SessionPlan plan;
    if (auto end = Startup(d, cfg, engine, reader, schema_copy).run(plan))
        return *end;
    starting.reset();

    SessionThreads threads(reader, engine, state, *progress);
    d.session_sample = [&threads] { return threads.sample(); };
    struct ClearSample {
        Daemon& d;
        ~ClearSample() { d.session_sample = nullptr; }
    } clear_sample{d}; // before the threads go
    if (plan.copy) {
        if (auto end = run_copy(d, cfg, plan, schema_copy, engine, threads))
            return *end;
    } else {
        threads.start_reader(plan.start);
        threads.start_apply();
    }
    return stream(d, threads);
}

/// Checks the spill directory before anything else: a start that cannot spill a large
/// transaction would fail later, in the middle of one.
void check_spill_directory(const config::Config& cfg)
{
    auto dir = queue::spill_dir(cfg.apply.spill_dir);
    try {
        auto free = queue::check_spill_dir(dir);
        if (free < k_spill_free_warning)
            spdlog::warn("spill directory {} has only {} MiB free: a transaction larger than a quarter of "
                         "apply.max_queue_bytes is written there in full (set apply.spill_dir to a larger disk)",
                         dir.string(), free >> 20);
    } catch (const SpillError& e) {
        throw ConfigError(std::string("apply.spill_dir: the spill directory cannot be used: ") + e.what());
    }
}

/// Server notices (e.g. "terminating connection due to administrator command") go through the
/// logger, so that `log.format: json` stays JSON.
void log_notice(std::string_view severity, std::string_view message)
{
    auto level = severity == "WARNING" ? spdlog::level::warn
                 : (severity == "NOTICE" || severity == "INFO") ? spdlog::level::info
                                                                  : spdlog::level::debug;
    spdlog::log(level, "server {}: {}", severity, message);
}

} // namespace

int run(const config::Config& loaded, const std::string& config_path)
{
    Signals signals;
    std::signal(SIGPIPE, SIG_IGN);
    // The daemon's configuration (the forward direction) and the reverse direction's: owned
    // here; a SIGHUP changes their reloadable keys (reload_configuration, main thread only).
    config::Config cfg = loaded;
    config::Config reversed = cfg.reversed();
    pg::set_notice_sink(log_notice);

    spdlog::info("pgshift {} starting: migration '{}', source {}, target {}", PGSHIFT_VERSION, cfg.name,
                 config::redact_conninfo(cfg.source.conninfo), config::redact_conninfo(cfg.target.conninfo));
    DaemonState state(cfg.name, PGSHIFT_VERSION);
    state.beat();
    state.set_max_lag_seconds(cfg.cutover.max_lag_seconds);
    auto applied = [&state] { return state.snapshot().applied_lsn; };
    verify::Runner forward_verifier(cfg, state.hold(), applied), reverse_verifier(reversed, state.hold(), applied);
    state.set_verifier(&forward_verifier);

    // Local checks that need no server, before anything else happens.
    std::string token;
    try {
        check_spill_directory(cfg);
        token = config::read_token_file(cfg.control.token_file);
    } catch (const ConfigError& e) {
        spdlog::error("configuration error: {}", e.what());
        return k_exit_config;
    }

    // The control plane runs for the daemon's whole life, also between sessions, on its own
    // thread (started after the signal mask, so it inherits it).
    std::unique_ptr<control::ControlServer> server;
    try {
        server = std::make_unique<control::ControlServer>(cfg.control.listen, token, state, PGSHIFT_VERSION);
        server->start();
        spdlog::info("control plane listening on {} (port {}){}", cfg.control.listen, server->port(),
                     cfg.control.token_file.empty() ? "; POST requests are not authenticated" : "");
    } catch (const ConfigError& e) {
        spdlog::error("configuration error: {}", e.what());
        return k_exit_config;
    }

    std::atomic<bool> publication_ready{false}, stop_monitor{false};
    std::thread monitor_thread([&] { monitor(cfg, reversed, state, publication_ready, stop_monitor); });
    struct JoinMonitor {
        std::atomic<bool>& stop;
        std::thread& thread;
        ~JoinMonitor()
        {
            stop.store(true);
            thread.join();
        }
    } join_monitor{stop_monitor, monitor_thread};

    SchemaFollower schema_follower(cfg, reversed, state);
    std::atomic<bool> stop_follower{false}, follower_done{false};
    std::thread follower_thread([&] {
        schema_follower.run(publication_ready, stop_follower);
        follower_done.store(true);
    });
    struct JoinFollower {
        SchemaFollower& follower;
        std::atomic<bool>& stop;
        std::atomic<bool>& done;
        std::thread& thread;
        ~JoinFollower()
        {
            stop.store(true);
            // A concurrent index build may run for minutes: cancelled (again, should the first
            // cancel arrive between two of its statements) until the thread ends.
            while (!done.load()) {
                follower.cancel();
                std::this_thread::sleep_for(milliseconds(100));
            }
            thread.join();
        }
    } join_follower{schema_follower, stop_follower, follower_done, follower_thread};

    Watchdog watchdog;
    Daemon d{cfg, reversed, signals, state, publication_ready, forward_verifier, reverse_verifier, watchdog};
    Backoff backoff(cfg.reconnect);
    signals.on_reload([&] {
        Live live{cfg, reversed, token, *server, state, backoff, d.notified_ready};
        reload_configuration(config_path, live);
    });
    for (;;) {
        auto started = std::chrono::steady_clock::now();
        state.set_state(State::starting);
        auto end = run_session(d);
        // An operation asked for while the session was ending: finish runs now, a cutover or
        // rollback did not start.
        if (auto request = state.take_request(); request == "finish" && end != SessionEnd::finished) {
            end = finish_migration(d);
        } else if (!request.empty() && request != "finish") {
            state.update_switch([&](control::SwitchReport& r) {
                r.phase = "aborted";
                r.error = "the streaming session ended before it could start: " + state.snapshot().last_error;
            });
            state.end_operation();
        }
        switch (end) {
        case SessionEnd::switched:
            backoff.reset();
            continue;
        case SessionEnd::finished:
            state.set_state(State::stopping);
            return k_exit_ok;
        case SessionEnd::stopped:
            state.set_state(State::stopping);
            spdlog::info("stopped");
            return k_exit_ok;
        case SessionEnd::config:
            return k_exit_config;
        case SessionEnd::fatal:
            state.set_state(State::failed);
            spdlog::error("stopping: the error above cannot be retried");
            return k_exit_failure;
        case SessionEnd::blocked:
            // A rule the source dropped, or a partition it made, during the migration: dropped
            // (created) here too with schema: copy (then applied again at once), else named with
            // the statements.
            if (auto v = state.take_violation(); v && change_target_for_rejected_row(d.active(), *v, state)) {
                backoff.reset();
                continue;
            }
            state.set_state(State::failed);
            state.pause();
            sd_notify(0, "STATUS=apply stopped: fix the target, then run pgshift resume");
            spdlog::error("apply stopped; the slot keeps every change. Fix the target, then run `pgshift resume` "
                          "(POST /v1/resume) or restart pgshift");
            while (state.paused_flag().load()) {
                if (signals.sleep(milliseconds(200), [&d] { d.beat(); })) {
                    state.set_state(State::stopping);
                    return k_exit_ok;
                }
                if (auto request = state.take_request(); request == "finish") {
                    if (finish_migration(d) == SessionEnd::finished)
                        return k_exit_ok;
                } else if (!request.empty()) {
                    state.end_operation();
                }
            }
            spdlog::info("resumed by the operator: starting a new session");
            backoff.reset();
            continue;
        case SessionEnd::retry:
            break;
        }
        if (std::chrono::steady_clock::now() - started > std::chrono::seconds(60))
            backoff.reset(); // the last session ran long enough to count as healthy
        auto delay = backoff.next();
        spdlog::info("reconnecting in {} ms", delay.count());
        if (signals.sleep(delay, [&d] { d.beat(); })) {
            state.set_state(State::stopping);
            return k_exit_ok;
        }
    }
}

} // namespace pgshift::daemon
