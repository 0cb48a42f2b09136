// ReplicationFixture: two clusters with the same schema and a configured pgshift between them.
#include "harness/replication_fixture.hpp"

#include <future>

namespace pgshift::test {

ReplicationFixture::ReplicationFixture(FixtureOptions options) : work_("pgshift-work")
{
    auto pending = std::async(std::launch::async, [settings = options.target_settings] {
        return std::make_unique<TestCluster>(settings);
    });
    try {
        source_ = std::make_unique<TestCluster>(options.source_settings);
    } catch (...) {
        pending.wait(); // the target cluster is stopped by its destructor
        throw;
    }
    target_ = pending.get();

    if (!options.schema_sql.empty() && options.schema_on_target)
        exec_on_both(*source_, *target_, options.schema_sql);
    else if (!options.schema_sql.empty())
        source_->exec(options.schema_sql);

    DaemonOptions d = options.daemon;
    d.source_conninfo = source_->conninfo() + options.daemon_conninfo_suffix;
    d.target_conninfo = target_->conninfo() + options.daemon_conninfo_suffix;
    daemon_ = std::make_unique<DaemonProcess>(work_.path(), d);
}

bool ReplicationFixture::start_and_wait_streaming(std::chrono::milliseconds timeout)
{
    daemon_->start();
    return wait_for_streaming(*source_, daemon_->slot_name(), timeout, daemon_.get());
}

bool ReplicationFixture::converged(const std::vector<std::string>& tables, std::chrono::milliseconds timeout)
{
    return wait_until_converged(*source_, *target_, tables, timeout, daemon_.get());
}

} // namespace pgshift::test
