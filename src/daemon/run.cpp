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
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"
#include "pgshift/reader/reader.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <csignal>
#include <exception>
#include <thread>

namespace pgshift::daemon {

namespace {

enum class SessionEnd { stopped, retry, fatal, config };

struct Backoff {
    std::chrono::milliseconds min{500}, max{30000}, current{500};
    double factor = 2.0;
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

/// Classifies an exception that ended a session and logs it once.
SessionEnd classify(const std::exception_ptr& ep)
{
    try {
        std::rethrow_exception(ep);
    } catch (const ConfigError& e) {
        spdlog::error("configuration error: {}", e.what());
        return SessionEnd::config;
    } catch (const SourceError& e) {
        spdlog::error("source: {}", e.what());
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const TargetError& e) {
        spdlog::error("target: {}", e.what());
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const pg::PgError& e) {
        spdlog::error("{}", e.what());
        return e.retryable() ? SessionEnd::retry : SessionEnd::fatal;
    } catch (const ProtocolError& e) {
        spdlog::error("protocol error: {}", e.what());
        return SessionEnd::fatal;
    } catch (const std::exception& e) {
        spdlog::error("internal error: {}", e.what());
        return SessionEnd::fatal;
    }
}

SessionEnd run_session(const config::Config& cfg, const sigset_t& signals, bool& notified_ready, queue::Stats& stats,
                       const std::atomic<bool>& paused)
{
    queue::TxnQueue queue(cfg.apply.max_queue_bytes);
    queue::Progress progress;
    apply::Applier applier(cfg, queue, progress, stats, 0);
    reader::Reader reader(cfg, queue, progress);
    Lsn start;
    try {
        Lsn durable = applier.connect();
        reader::prepare_publication(cfg);
        auto slot = reader::read_slot(cfg);
        if (slot.exists && slot.wal_status == "lost")
            throw SourceError("replication slot " + cfg.slot_name() +
                                  " was invalidated by the source (wal_status = lost: the WAL it needed was "
                                  "removed, see max_slot_wal_keep_size); changes were lost, so the migration must "
                                  "start over from a fresh copy. pgshift never recreates the slot by itself",
                              false);
        reader.connect();
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
        applier.begin_session(start);
    } catch (...) {
        return classify(std::current_exception());
    }

    std::atomic<bool> stop_apply{false}, stop_reader{false}, failed{false};
    std::exception_ptr apply_error, reader_error;
    std::thread apply_thread([&] {
        try {
            applier.run(stop_apply, paused);
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

    if (!notified_ready) {
        sd_notify(0, "READY=1\nSTATUS=streaming");
        notified_ready = true;
    }
    bool stop_requested = false;
    while (!failed.load()) {
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

    if (apply_error || reader_error) {
        auto end = SessionEnd::retry;
        for (auto& ep : {apply_error, reader_error})
            if (ep) {
                auto e = classify(ep);
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
    Backoff backoff;
    bool notified_ready = false;
    queue::Stats stats;
    std::atomic<bool> paused{false};
    for (;;) {
        auto started = std::chrono::steady_clock::now();
        auto end = run_session(cfg, signals, notified_ready, stats, paused);
        switch (end) {
        case SessionEnd::stopped:
            spdlog::info("stopped");
            return k_exit_ok;
        case SessionEnd::config:
            return k_exit_config;
        case SessionEnd::fatal:
            spdlog::error("stopping: the error above cannot be retried");
            return k_exit_failure;
        case SessionEnd::retry:
            break;
        }
        if (std::chrono::steady_clock::now() - started > std::chrono::seconds(60))
            backoff.reset(); // the last session ran long enough to count as healthy
        auto delay = backoff.next();
        spdlog::info("reconnecting in {} ms", delay.count());
        if (wait_for_signal(signals, delay))
            return k_exit_ok;
    }
}

} // namespace pgshift::daemon
