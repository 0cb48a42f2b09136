#include "pgshift/daemon/watchdog.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <chrono>

namespace pgshift::daemon {

Watchdog::Watchdog()
{
    std::uint64_t usec = 0;
    enabled_ = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
    interval_ms_ = std::max<std::int64_t>(static_cast<std::int64_t>(usec / 2000), 100);
    if (enabled_)
        spdlog::info("systemd watchdog: {:.0f} s; WATCHDOG=1 every {} ms while the reader and apply make "
                     "progress or are idle",
                     static_cast<double>(usec) / 1e6, interval_ms_);
}

void Watchdog::tick(const std::function<SessionSample()>& sample)
{
    if (!enabled_)
        return;
    const auto now = steady_ms();
    if (now < next_check_ms_)
        return;
    next_check_ms_ = now + 1000;
    auto why = liveness_.check(sample ? sample() : SessionSample{}, now);
    if (!why.empty() && healthy_.exchange(false)) {
        spdlog::error("watchdog: {}: no more WATCHDOG=1 to systemd, which restarts pgshift when WatchdogSec "
                      "passes without one (nothing is lost: the next start resumes from the target's origin "
                      "progress)",
                      why);
        sd_notify(0, ("STATUS=wedged: " + why).c_str());
    } else if (why.empty() && !healthy_.exchange(true)) {
        spdlog::info("watchdog: the reader and apply make progress again; WATCHDOG=1 resumes");
    }
    ping(now);
}

void Watchdog::ping(std::int64_t now)
{
    if (!enabled_ || !healthy_.load())
        return;
    auto last = last_ping_ms_.load();
    if (now - last < interval_ms_ || !last_ping_ms_.compare_exchange_strong(last, now))
        return;
    sd_notify(0, "WATCHDOG=1");
}

Watchdog::Busy::Busy(Watchdog& w, DaemonState& state) : w_(w), state_(state)
{
    thread_ = std::thread([this] {
        std::unique_lock lock(mutex_);
        while (!done_) {
            state_.beat();
            w_.ping(steady_ms());
            cv_.wait_for(lock, std::chrono::milliseconds(std::min<std::int64_t>(w_.interval_ms_, 1000)));
        }
    });
}

Watchdog::Busy::~Busy()
{
    {
        std::lock_guard lock(mutex_);
        done_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

} // namespace pgshift::daemon
