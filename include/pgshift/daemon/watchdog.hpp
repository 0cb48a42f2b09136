// systemd's watchdog (WatchdogSec= in the unit), fed from the daemon's main thread.
#pragma once

#include "pgshift/daemon/state.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace pgshift::daemon {

/// WATCHDOG=1 from the main thread's loops (Daemon::beat in run.cpp), at half the timeout, and
/// only while the session's reader and apply threads make progress or are legitimately idle
/// (Liveness). Nothing is sent when systemd did not ask for it (sd_watchdog_enabled), e.g.
/// outside systemd. Once STOPPING=1 is sent, systemd no longer watches, so a long stop is not
/// cut short by it.
class Watchdog {
public:
    Watchdog();
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    [[nodiscard]] bool enabled() const { return enabled_; }

    /// Main thread. `sample` reads the running session's threads (empty between sessions).
    void tick(const std::function<SessionSample()>& sample);

    /// For a step that blocks the main thread longer than the watchdog allows (a session's
    /// start-up checks, index builds after the initial copy, a cutover's commands): a thread
    /// pings and beats the heartbeat (/livez) on the main thread's behalf while the step runs,
    /// as long as the last verdict on the session's threads was healthy. Joined on destruction.
    class Busy {
    public:
        Busy(Watchdog& w, DaemonState& state);
        Busy(const Busy&) = delete;
        Busy& operator=(const Busy&) = delete;
        ~Busy();

    private:
        Watchdog& w_;
        DaemonState& state_;
        std::mutex mutex_;
        std::condition_variable cv_;
        bool done_ = false; // guarded by mutex_
        std::thread thread_;
    };

private:
    /// Sends WATCHDOG=1 when due and healthy; from the main thread or a Busy thread.
    void ping(std::int64_t now);

    bool enabled_ = false;
    std::int64_t interval_ms_ = 0;
    std::int64_t next_check_ms_ = 0; // main thread only
    Liveness liveness_;              // main thread only
    std::atomic<bool> healthy_{true};
    std::atomic<std::int64_t> last_ping_ms_{0};
};

} // namespace pgshift::daemon
