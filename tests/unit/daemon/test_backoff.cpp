// Backoff between sessions: never spins, never overflows, stays within [min, max].
#include "pgshift/daemon/backoff.hpp"

#include <catch2/catch.hpp>

#include <limits>

using pgshift::config::Reconnect;
using pgshift::daemon::Backoff;
using std::chrono::milliseconds;

TEST_CASE("backoff doubles from min to max and resets", "[daemon][backoff]")
{
    Backoff b(Reconnect{0.5, 30, 2});
    CHECK(b.next() == milliseconds(500));
    CHECK(b.next() == milliseconds(1000));
    CHECK(b.next() == milliseconds(2000));
    for (int i = 0; i < 20; ++i)
        (void)b.next();
    CHECK(b.next() == milliseconds(30000));
    b.reset();
    CHECK(b.next() == milliseconds(500));
}

TEST_CASE("regression: a huge factor never overflows into a negative delay", "[daemon][backoff]")
{
    // factor 1e300 once logged "reconnecting in -9223372036854775808 ms".
    for (double factor : {1e300, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::max()}) {
        Backoff b(Reconnect{0.5, 30, factor});
        CHECK(b.next() == milliseconds(500));
        for (int i = 0; i < 5; ++i)
            CHECK(b.next() == milliseconds(30000));
    }
}

TEST_CASE("regression: a tiny or broken delay never makes the loop spin", "[daemon][backoff]")
{
    // min 0.0005 s once logged "reconnecting in 0 ms" and reconnected tens of thousands of times.
    Backoff tiny(Reconnect{0.0005, 0.0005, 1});
    for (int i = 0; i < 5; ++i)
        CHECK(tiny.next() >= milliseconds(100));
    Backoff nan(Reconnect{std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::quiet_NaN()});
    for (int i = 0; i < 5; ++i) {
        auto d = nan.next();
        CHECK(d >= milliseconds(100));
        CHECK(d <= milliseconds(100));
    }
}
