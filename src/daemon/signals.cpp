#include "pgshift/daemon/signals.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <thread>

#include <pthread.h>

namespace pgshift::daemon {

using std::chrono::milliseconds;

Signals::Signals()
{
    sigemptyset(&set_);
    for (int s : {SIGTERM, SIGINT, SIGHUP})
        sigaddset(&set_, s);
    // Blocked before any thread starts, so every thread inherits the mask.
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
}

void Signals::on_reload(std::function<void()> reload)
{
    reload_ = std::move(reload);
    run_pending_reload();
}

bool Signals::wait(milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::max(milliseconds(0),
                             std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()));
        timespec ts{static_cast<time_t>(left.count() / 1000), static_cast<long>((left.count() % 1000) * 1000000)};
        int sig = sigtimedwait(&set_, nullptr, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            spdlog::info("received {}, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            watch_second();
            return true;
        }
        if (sig == SIGHUP) {
            hup_pending_ = true;
            if (defer_ > 0)
                spdlog::info("SIGHUP: the configuration is reloaded when the running operation ends");
            run_pending_reload();
        }
        if (left.count() == 0 || (sig < 0 && errno == EAGAIN))
            return false;
    }
}

bool Signals::sleep(milliseconds delay, const std::function<void()>& beat)
{
    auto until = std::chrono::steady_clock::now() + delay;
    do {
        beat();
        auto left = std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
        if (wait(std::clamp(left, milliseconds(0), milliseconds(200))))
            return true;
    } while (std::chrono::steady_clock::now() < until);
    return false;
}

void Signals::watch_second() const
{
    if (watching_.exchange(true))
        return;
    std::thread([set = set_] {
        for (;;) {
            int sig = 0;
            if (sigwait(&set, &sig) != 0)
                continue;
            if (sig == SIGHUP) {
                spdlog::info("SIGHUP while stopping: ignored");
                continue;
            }
            spdlog::warn("received a second {}: exiting now without waiting for apply (nothing is "
                         "lost: the next start resumes from the target's origin progress)",
                         sig == SIGTERM ? "SIGTERM" : "SIGINT");
            spdlog::default_logger()->flush();
            std::_Exit(0);
        }
    }).detach();
}

void Signals::run_pending_reload()
{
    if (!hup_pending_ || defer_ > 0 || !reload_)
        return;
    hup_pending_ = false;
    reload_();
}

} // namespace pgshift::daemon
