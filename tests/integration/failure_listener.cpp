// Catch2 listener: when an assertion fails, print the log tail of every running pgshift daemon.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "harness/daemon_process.hpp"

#include <catch2/catch.hpp>

namespace pgshift::test {

struct DaemonLogListener : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;

    bool assertionEnded(const Catch::AssertionStats& stats) override
    {
        if (!stats.assertionResult.isOk())
            print_live_daemon_logs("assertion failed");
        return true;
    }
};

CATCH_REGISTER_LISTENER(DaemonLogListener)

} // namespace pgshift::test
