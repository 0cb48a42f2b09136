// Exponential backoff between sessions, from the `reconnect` configuration section.
#pragma once

#include "pgshift/config/config.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace pgshift::daemon {

/// Delays start at min, grow by factor after each failed session, stop at max. Computed in
/// floating point and clamped to [min, max] before the conversion to milliseconds, so no
/// factor can overflow a duration (a factor of 1e300 once gave "-9223372036854775808 ms") and
/// no delay is shorter than min, whatever configuration got past validation.
class Backoff {
public:
    /// The shortest delay ever used, even if the configuration asks for less: a session start
    /// costs both servers a connection, and the loop must never spin.
    static constexpr double k_floor_seconds = 0.1;

    explicit Backoff(const config::Reconnect& r)
        : min_(std::max(k_floor_seconds, finite_or(r.min_delay_seconds, k_floor_seconds))),
          max_(std::max(min_, finite_or(r.max_delay_seconds, min_))),
          factor_(std::isnan(r.factor) ? 1.0 : std::max(1.0, r.factor)), current_(min_)
    {
    }
    void reset() { current_ = min_; }
    /// The next delay, then grows the one after.
    std::chrono::milliseconds next()
    {
        auto d = current_;
        current_ = std::clamp(current_ * factor_, min_, max_); // inf * anything is clamped to max
        return std::chrono::milliseconds(static_cast<long long>(d * 1000));
    }

private:
    static double finite_or(double v, double fallback) { return std::isfinite(v) ? v : fallback; }
    double min_, max_, factor_, current_;
};

} // namespace pgshift::daemon
