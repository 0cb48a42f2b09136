// The daemon's main loop: checks before any side effect, sessions of (reader thread, apply
// thread), the monitor thread, signals, backoff, shutdown.
//
// Design notes
// - Thread map: the main thread owns configuration, signals (blocked everywhere and taken with
//   sigtimedwait, so no handler runs in a random thread) and the session lifecycle; each session
//   has one reader thread (the replication connection) and one apply thread (the target
//   connection); the monitor thread lives as long as the daemon (source WAL position, both
//   servers' reachability, tables that appear on the source). No detached threads.
// - Signals are taken on every path: while streaming, while backing off (whatever the delay),
//   between the blocking steps of a session's start-up, and while waiting for `resume`.
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
#include "pgshift/daemon/run.hpp"

#include "pgshift/apply/engine.hpp"
#include "pgshift/daemon/backoff.hpp"
#include "pgshift/control/server.hpp"
#include "pgshift/daemon/state.hpp"
#include "pgshift/daemon/table_watch.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/message_log.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"
#include "pgshift/reader/catalog.hpp"
#include "pgshift/reader/reader.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <csignal>
#include <exception>
#include <thread>

namespace pgshift::daemon {

namespace {

using std::chrono::milliseconds;

/// How a session ended: `blocked` = the target needs the operator (a table or column missing, a
/// row that should be there is not); the daemon stays up, reports `failed`, and tries again on
/// `pgshift resume` (POST /v1/resume) or a restart. Nothing is lost: the slot keeps the changes.
enum class SessionEnd { stopped, retry, blocked, fatal, config };

/// Free space below which the spill directory earns a warning at start.
constexpr std::uint64_t k_spill_free_warning = std::uint64_t(1) << 30;

/// The daemon's termination signals: blocked in every thread, taken here.
class Signals {
public:
    Signals()
    {
        sigemptyset(&set_);
        for (int s : {SIGTERM, SIGINT, SIGHUP})
            sigaddset(&set_, s);
        // Blocked before any thread starts, so every thread inherits the mask.
        pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    }
    /// Waits up to `timeout` for a termination signal; true when one arrived.
    bool wait(milliseconds timeout) const
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(
                                                      deadline - std::chrono::steady_clock::now()));
            timespec ts{static_cast<time_t>(left.count() / 1000), static_cast<long>((left.count() % 1000) * 1000000)};
            int sig = sigtimedwait(&set_, nullptr, &ts);
            if (sig == SIGTERM || sig == SIGINT) {
                spdlog::info("received {}, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
                return true;
            }
            if (sig == SIGHUP)
                spdlog::info("SIGHUP: configuration reload is not supported yet; restart to apply changes");
            if (left.count() == 0 || (sig < 0 && errno == EAGAIN))
                return false;
        }
    }
    /// A termination signal is pending (taken, without waiting).
    bool pending() const { return wait(milliseconds(0)); }
    /// Waits `delay` in slices, beating the heartbeat; true when a termination signal arrived.
    bool sleep(milliseconds delay, DaemonState& state) const
    {
        auto until = std::chrono::steady_clock::now() + delay;
        do {
            state.beat();
            auto left = std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
            if (wait(std::clamp(left, milliseconds(0), milliseconds(200))))
                return true;
        } while (std::chrono::steady_clock::now() < until);
        return false;
    }

private:
    sigset_t set_;
};

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
    auto lost = [&](bool source) {
        state.set_endpoint(source, false, 0);
        (source ? stats.reconnects_source : stats.reconnects_target).fetch_add(1);
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
        record(std::string("source: ") + e.what(), stats.errors_source);
        if (e.retryable())
            lost(true);
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const TargetError& e) {
        record(std::string("target: ") + e.what(), stats.errors_apply);
        if (e.retryable())
            lost(false);
        return e.retryable() ? SessionEnd::retry : SessionEnd::blocked;
    } catch (const pg::PgError& e) {
        record(std::string(source_side ? "source: " : "target: ") + e.what(),
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

/// Every few seconds, on ordinary connections of its own: the source's WAL position and the
/// slot's retained WAL (keepalives only carry what was sent), whether each server answers, and
/// (once the publication exists) tables that appeared on the source. Failures here never end a
/// session: the reader and apply notice real connection loss themselves.
void monitor(const config::Config& cfg, DaemonState& state, const std::atomic<bool>& publication_ready,
             const std::atomic<bool>& stop)
{
    std::unique_ptr<pg::Connection> source, target;
    TableWatch watch(cfg, state);
    auto probe = [&](std::unique_ptr<pg::Connection>& conn, const std::string& conninfo, bool is_source) {
        try {
            if (!conn || !conn->is_ok())
                conn = std::make_unique<pg::Connection>(pg::conninfo_with(
                    conninfo, {{"application_name", "pgshift_" + cfg.name + "_monitor"}}));
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
        if (probe(target, cfg.target.conninfo, false)) {
            try {
                target->exec("SELECT 1");
            } catch (const std::exception&) {
                target.reset();
            }
        }
        if (probe(source, cfg.source.conninfo, true)) {
            try {
                auto r = source->exec_params(
                    "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, "
                    "coalesce((SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                    "          WHERE slot_name = $1), 0)",
                    {cfg.slot_name()});
                state.set_source_position(std::stoull(r.str(0, 0)), std::stoull(r.str(0, 1)));
                if (publication_ready.load())
                    watch.poll(*source);
            } catch (const std::exception& e) {
                spdlog::debug("monitor: {}", e.what());
                source.reset();
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
        // Do no harm: publishing a table without a usable replica identity makes the source
        // refuse the application's UPDATE and DELETE on it.
        std::string problems;
        for (const auto& t : plan.tables)
            if (!t.identity_problem.empty())
                problems += "\n  " + t.identity_problem;
        if (!problems.empty())
            throw ConfigError("refusing to start: publishing these tables would break writes on the source "
                              "(nothing was created or changed):" + problems);
    }
    return plan;
}

/// Everything one session shares with the daemon's lifetime.
struct Daemon {
    const config::Config& cfg;
    const Signals& signals;
    DaemonState& state;
    std::atomic<bool>& publication_ready;
    bool notified_ready = false;
};

SessionEnd run_session(Daemon& d)
{
    const auto& cfg = d.cfg;
    auto& state = d.state;
    // Entries are capped too (a transaction costs at least a few hundred bytes of accounting).
    auto max_entries = std::clamp<std::size_t>(cfg.apply.max_queue_bytes / 1024, 1024, std::size_t(1) << 20);
    auto queue_ptr = std::make_shared<queue::TxnQueue>(cfg.apply.max_queue_bytes, max_entries);
    auto progress_ptr = std::make_shared<queue::Progress>(max_entries);
    auto& queue = *queue_ptr;
    auto& progress = *progress_ptr;
    state.set_session({progress_ptr, queue_ptr});
    apply::Engine engine(cfg, queue, progress, state.stats());
    reader::Reader reader(cfg, queue, progress, state.stats());
    Lsn start;
    bool source_side = false;
    try {
        // Read-only checks on both servers first.
        Lsn durable = engine.connect();
        state.set_endpoint(false, true, engine.server_version());
        if (d.signals.pending())
            return SessionEnd::stopped;
        source_side = true;
        auto plan = check_source(cfg, durable, d.publication_ready.load());
        if (d.signals.pending())
            return SessionEnd::stopped;

        // Side effects, in the order exactly-once needs.
        if (!d.publication_ready.load()) {
            pg::Connection source(cfg.source.conninfo);
            reader::prepare_publication(source, cfg.publication_name(), plan.tables);
            d.publication_ready.store(true);
        }
        source_side = false;
        engine.ensure_origins();
        source_side = true;
        reader.connect();
        state.set_endpoint(true, true, reader.server_version());
        if (!plan.slot.exists) {
            start = reader.create_slot();
            source_side = false;
            engine.advance_origin(start);
        } else {
            start = durable.is_zero() ? plan.slot.confirmed_flush : durable;
        }
        source_side = false;
        engine.begin_session(start);
    } catch (...) {
        return classify(std::current_exception(), state, source_side);
    }

    std::atomic<bool> stop_apply{false}, stop_reader{false}, failed{false};
    std::exception_ptr apply_error, reader_error;
    std::thread apply_thread([&] {
        try {
            engine.run(stop_apply, state.paused_flag());
        } catch (...) {
            apply_error = std::current_exception();
            failed.store(true);
        }
    });
    std::thread reader_thread([&] {
        try {
            reader.stream(start, stop_reader);
        } catch (...) {
            reader_error = std::current_exception();
            failed.store(true);
        }
    });

    state.set_state(State::streaming);
    state.clear_current_error();
    if (!d.notified_ready) {
        sd_notify(0, "READY=1\nSTATUS=streaming");
        d.notified_ready = true;
    }
    bool stop_requested = false;
    while (!failed.load()) {
        state.beat();
        if (d.signals.wait(milliseconds(200))) {
            stop_requested = true;
            sd_notify(0, "STOPPING=1");
            break;
        }
    }
    // Apply first, so that its final durable position is what the reader reports.
    stop_apply.store(true);
    apply_thread.join();
    stop_reader.store(true);
    reader_thread.join();

    if (apply_error || reader_error) {
        auto end = SessionEnd::retry;
        for (auto [ep, from_source] : {std::pair{apply_error, false}, std::pair{reader_error, true}})
            if (ep) {
                auto e = classify(ep, state, from_source);
                if (e != SessionEnd::retry)
                    end = e;
            }
        return stop_requested && end == SessionEnd::retry ? SessionEnd::stopped : end;
    }
    return SessionEnd::stopped;
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

int run(const config::Config& cfg)
{
    const Signals signals;
    std::signal(SIGPIPE, SIG_IGN);
    pg::set_notice_sink(log_notice);

    spdlog::info("pgshift {} starting: migration '{}', source {}, target {}", PGSHIFT_VERSION, cfg.name,
                 config::redact_conninfo(cfg.source.conninfo), config::redact_conninfo(cfg.target.conninfo));
    DaemonState state(cfg.name, PGSHIFT_VERSION);
    state.beat();

    // Local checks that need no server, before anything else happens.
    std::string token;
    try {
        if (cfg.initial_copy.enabled)
            throw ConfigError("initial_copy.enabled is true, but this version of pgshift does not copy "
                              "existing rows yet: load the target first (e.g. pg_dump/pg_restore of an "
                              "idle source) and set initial_copy.enabled: false");
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
    std::thread monitor_thread([&] { monitor(cfg, state, publication_ready, stop_monitor); });
    struct JoinMonitor {
        std::atomic<bool>& stop;
        std::thread& thread;
        ~JoinMonitor()
        {
            stop.store(true);
            thread.join();
        }
    } join_monitor{stop_monitor, monitor_thread};

    Daemon d{cfg, signals, state, publication_ready};
    Backoff backoff(cfg.reconnect);
    for (;;) {
        auto started = std::chrono::steady_clock::now();
        state.set_state(State::starting);
        auto end = run_session(d);
        switch (end) {
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
            state.set_state(State::failed);
            state.pause();
            sd_notify(0, "STATUS=apply stopped: fix the target, then run pgshift resume");
            spdlog::error("apply stopped; the slot keeps every change. Fix the target, then run `pgshift resume` "
                          "(POST /v1/resume) or restart pgshift");
            while (state.paused_flag().load()) {
                if (signals.sleep(milliseconds(200), state)) {
                    state.set_state(State::stopping);
                    return k_exit_ok;
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
        if (signals.sleep(delay, state)) {
            state.set_state(State::stopping);
            return k_exit_ok;
        }
    }
}

} // namespace pgshift::daemon
