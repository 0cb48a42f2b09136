// The daemon's signals: blocked in every thread, taken on the main thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>

namespace pgshift::daemon {

/// SIGTERM and SIGINT stop; SIGHUP reloads the configuration (on_reload()), at once, or when the
/// last Defer ends if one holds reloads back (a cutover must not see its settings change
/// half-way). Construct it before any thread starts: the signals are blocked in the
/// constructing thread, and every thread started later inherits the mask, so no handler ever
/// runs in a random thread (sigtimedwait takes them on the main thread).
class Signals {
public:
    Signals();
    Signals(const Signals&) = delete;
    Signals& operator=(const Signals&) = delete;

    /// What a SIGHUP runs (on the main thread, from wait()). A SIGHUP taken before it is set
    /// runs it now.
    void on_reload(std::function<void()> reload);
    /// Waits up to `timeout` for a termination signal; true when one arrived. A SIGHUP meanwhile
    /// runs the reload and the wait goes on.
    bool wait(std::chrono::milliseconds timeout);
    /// A termination signal is pending (taken, without waiting).
    bool pending() { return wait(std::chrono::milliseconds(0)); }
    /// Waits `delay` in slices, calling `beat` before each; true when a termination signal arrived.
    bool sleep(std::chrono::milliseconds delay, const std::function<void()>& beat);

    /// While one exists, a SIGHUP is only recorded; the reload runs when the last one ends.
    class Defer {
    public:
        explicit Defer(Signals& s) : s_(s) { ++s_.defer_; }
        Defer(const Defer&) = delete;
        Defer& operator=(const Defer&) = delete;
        ~Defer()
        {
            if (--s_.defer_ == 0)
                s_.run_pending_reload();
        }

    private:
        Signals& s_;
    };

private:
    /// After the first termination signal, a second one ends the process at once, without
    /// waiting for apply (e.g. stuck on a lock): what a kill -9 would do, which loses nothing
    /// (the next start resumes from the target's origin progress). Exit code 0: a stop was asked.
    void watch_second() const;
    void run_pending_reload();

    sigset_t set_;
    mutable std::atomic<bool> watching_{false};
    std::function<void()> reload_;
    int defer_ = 0;
    bool hup_pending_ = false;
};

} // namespace pgshift::daemon
