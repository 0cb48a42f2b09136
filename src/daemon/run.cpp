// The daemon's main loop: sessions of (reader thread, apply thread), signals, backoff, shutdown.
//
// Design notes
// - Thread map: the main thread owns configuration, signals (blocked everywhere and taken with
//   sigtimedwait, so no handler runs in a random thread) and the session lifecycle; each session
//   has one reader thread (the replication connection) and one apply thread (the target
//   connection). No detached threads: every session joins both before it ends.
// - A session ends on a signal (graceful: apply finishes its transaction and records durable
//   progress, then the reader reports it to the source and closes the stream) or on an error.
//   Retryable errors (connection loss, server restart, slot still held by an old walsender)
//   start a new session after an exponential backoff; a new session re-reads the durable
//   position from the target, so whatever was in memory is simply received again.
// - Startup order matters for exactly-once: the target origin is read before the slot is
//   looked at; a new slot's consistent point initialises the origin before streaming starts.
#include "pgshift/daemon/run.hpp"

#include "pgshift/apply/applier.hpp"
#include "pgshift/control/server.hpp"
#include "pgshift/daemon/state.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"
#include "pgshift/reader/reader.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <csignal>
#include <exception>
#include <thread>

namespace pgshift::daemon {

namespace {

/// How a session ended: `blocked` = the target needs the operator (a table or column missing, a
/// row that should be there is not); the daemon stays up, reports `failed`, and tries again on
/// `pgshift resume` (POST /v1/resume) or a restart. Nothing is lost: the slot keeps the changes.
enum class SessionEnd { stopped, retry, blocked, fatal, config };

/// Exponential backoff between sessions, from the `reconnect` configuration section.
struct Backoff {
    explicit Backoff(const config::Reconnect& r)
        : min(static_cast<long>(r.min_delay_seconds * 1000)), max(static_cast<long>(r.max_delay_seconds * 1000)),
          current(min), factor(r.factor)
    {
    }
    std::chrono::milliseconds min, max, current;
    double factor;
    void reset() { current = min; }
    std::chrono::milliseconds next()
    {
        auto d = current;
        current = std::min(max, std::chrono::milliseconds(static_cast<long>(current.count() * factor)));
        return d;
    }
};

/// Waits up to `timeout` for a termination signal; true when one arrived.
bool wait_for_signal(const sigset_t& set, std::chrono::milliseconds timeout)
{
    timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>((timeout.count() % 1000) * 1000000)};
    for (;;) {
        int sig = sigtimedwait(&set, nullptr, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            spdlog::info("received {}, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return true;
        }
        if (sig == SIGHUP) {
            spdlog::info("SIGHUP: configuration reload is not supported yet; restart to apply changes");
            continue;
        }
        return false; // timeout (EAGAIN) or EINTR
    }
}

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
    try {
        std::rethrow_exception(ep);
    } catch (const ConfigError& e) {
        record(std::string("configuration error: ") + e.what(), stats.errors_control);
        return SessionEnd::config;
    } catch (const SourceError& e) {
        record(std::string("source: ") + e.what(), stats.errors_source);
        if (e.retryable())
            stats.reconnects_source.fetch_add(1);
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const TargetError& e) {
        record(std::string("target: ") + e.what(), stats.errors_apply);
        if (e.retryable())
            stats.reconnects_target.fetch_add(1);
        return e.retryable() ? SessionEnd::retry : SessionEnd::blocked;
    } catch (const pg::PgError& e) {
        record(std::string(source_side ? "source: " : "target: ") + e.what(),
               source_side ? stats.errors_source : stats.errors_apply);
        if (e.retryable())
            (source_side ? stats.reconnects_source : stats.reconnects_target).fetch_add(1);
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const ProtocolError& e) {
        record(std::string("protocol error: ") + e.what(), stats.errors_decode);
        return SessionEnd::fatal;
    } catch (const std::exception& e) {
        record(std::string("internal error: ") + e.what(), stats.errors_source);
        return SessionEnd::fatal;
    }
}

/// Polls the source's WAL position and the slot's retained WAL every few seconds on an ordinary
/// connection of its own (keepalives only carry what was sent, not the source's WAL end).
/// Failures here never end the session: the reader notices real connection loss.
void monitor_source(const config::Config& cfg, DaemonState& state, const std::atomic<bool>& stop)
{
    std::unique_ptr<pg::Connection> conn;
    while (!stop.load()) {
        try {
            if (!conn || !conn->is_ok())
                conn = std::make_unique<pg::Connection>(
                    pg::conninfo_with(cfg.source.conninfo, {{"application_name", "pgshift_" + cfg.name + "_monitor"}}));
            auto r = conn->exec_params(
                "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, "
                "coalesce((SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                "          WHERE slot_name = $1), 0)",
                {cfg.slot_name()});
            state.set_source_position(std::stoull(r.str(0, 0)), std::stoull(r.str(0, 1)));
        } catch (const std::exception& e) {
            spdlog::debug("source monitor: {}", e.what());
            conn.reset();
        }
        for (int i = 0; i < 20 && !stop.load(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

SessionEnd run_session(const config::Config& cfg, const sigset_t& signals, bool& notified_ready, DaemonState& state)
{
    // Entries are capped too (a transaction costs at least a few hundred bytes of accounting).
    auto max_entries = std::clamp<std::size_t>(cfg.apply.max_queue_bytes / 1024, 1024, std::size_t(1) << 20);
    auto queue_ptr = std::make_shared<queue::TxnQueue>(cfg.apply.max_queue_bytes, max_entries);
    auto progress_ptr = std::make_shared<queue::Progress>(max_entries);
    auto& queue = *queue_ptr;
    auto& progress = *progress_ptr;
    state.set_session({progress_ptr, queue_ptr});
    apply::Applier applier(cfg, queue, progress, state.stats(), 0);
    reader::Reader reader(cfg, queue, progress, state.stats());
    Lsn start;
    bool source_side = false;
    try {
        Lsn durable = applier.connect();
        state.set_endpoint(false, true, applier.server_version());
        source_side = true;
        reader::prepare_publication(cfg);
        auto slot = reader::read_slot(cfg);
        if (slot.exists && slot.wal_status == "lost")
            throw SourceError("replication slot " + cfg.slot_name() +
                                  " was invalidated by the source (wal_status = lost: the WAL it needed was "
                                  "removed, see max_slot_wal_keep_size); changes were lost, so the migration must "
                                  "start over from a fresh copy. pgshift never recreates the slot by itself",
                              false);
        reader.connect();
        state.set_endpoint(true, true, reader.server_version());
        if (!slot.exists) {
            if (!durable.is_zero())
                throw SourceError("the target's origin has applied up to " + durable.str() + " but the slot " +
                                      cfg.slot_name() +
                                      " no longer exists on the source; changes since then cannot be recovered. "
                                      "Start the migration over (drop the target's origin and tables)",
                                  false);
            if (cfg.initial_copy.enabled)
                throw ConfigError("initial_copy.enabled is true, but this version of pgshift does not copy "
                                  "existing rows yet: load the target first (e.g. pg_dump/pg_restore of an "
                                  "idle source) and set initial_copy.enabled: false");
            start = reader.create_slot();
            applier.advance_origin(start);
        } else {
            start = durable.is_zero() ? slot.confirmed_flush : durable;
        }
        source_side = false;
        applier.begin_session(start);
    } catch (...) {
        return classify(std::current_exception(), state, source_side);
    }

    std::atomic<bool> stop_apply{false}, stop_reader{false}, stop_monitor{false}, failed{false};
    std::exception_ptr apply_error, reader_error;
    std::thread apply_thread([&] {
        try {
            applier.run(stop_apply, state.paused_flag());
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

    std::thread monitor_thread([&] { monitor_source(cfg, state, stop_monitor); });
    state.set_state(State::streaming);
    if (!notified_ready) {
        sd_notify(0, "READY=1\nSTATUS=streaming");
        notified_ready = true;
    }
    bool stop_requested = false;
    while (!failed.load()) {
        state.beat();
        if (wait_for_signal(signals, std::chrono::milliseconds(200))) {
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
    stop_monitor.store(true);
    monitor_thread.join();
    state.set_endpoint(true, false, 0);
    state.set_endpoint(false, false, 0);

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

} // namespace

int run(const config::Config& cfg)
{
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    // Blocked before any thread starts, so every thread inherits the mask.
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    spdlog::info("pgshift {} starting: migration '{}', source {}, target {}", PGSHIFT_VERSION, cfg.name,
                 config::redact_conninfo(cfg.source.conninfo), config::redact_conninfo(cfg.target.conninfo));
    Backoff backoff(cfg.reconnect);
    bool notified_ready = false;
    DaemonState state(cfg.name, PGSHIFT_VERSION);
    state.beat();

    // The control plane runs for the daemon's whole life, also between sessions, on its own
    // thread (started after the signal mask, so it inherits it).
    std::unique_ptr<control::ControlServer> server;
    try {
        server = std::make_unique<control::ControlServer>(cfg.control.listen, config::read_token_file(cfg.control.token_file),
                                                          state, PGSHIFT_VERSION);
        server->start();
        spdlog::info("control plane listening on {} (port {}){}", cfg.control.listen, server->port(),
                     cfg.control.token_file.empty() ? "; POST requests are not authenticated" : "");
    } catch (const ConfigError& e) {
        spdlog::error("configuration error: {}", e.what());
        return k_exit_config;
    }
    for (;;) {
        auto started = std::chrono::steady_clock::now();
        state.set_state(State::starting);
        auto end = run_session(cfg, signals, notified_ready, state);
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
                state.beat();
                if (wait_for_signal(signals, std::chrono::milliseconds(200))) {
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
        for (auto waited = std::chrono::milliseconds(0); waited < delay; waited += std::chrono::milliseconds(200)) {
            state.beat();
            if (wait_for_signal(signals, std::min(std::chrono::milliseconds(200), delay - waited)))
                return k_exit_ok;
        }
    }
}

} // namespace pgshift::daemon
