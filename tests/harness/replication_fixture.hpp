// A source cluster, a target cluster, a work dir and a pgshift daemon wired between them.
#pragma once

#include "harness/cluster.hpp"
#include "harness/daemon_process.hpp"
#include "harness/sql_helpers.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace pgshift::test {

struct FixtureOptions {
    /// Run on both clusters before the daemon starts (the daemon copies neither schema nor rows here).
    std::string schema_sql;
    /// false: schema_sql runs on the source only (an empty target, for schema: copy).
    bool schema_on_target = true;
    std::vector<std::string> source_settings;
    std::vector<std::string> target_settings;
    DaemonOptions daemon; ///< conninfos are filled in by the fixture
    /// Appended to both conninfos the daemon uses, e.g. " user=mig" (a role schema_sql created).
    std::string daemon_conninfo_suffix;
};

/// Members are destroyed daemon first, clusters last, also during exception unwinding.
class ReplicationFixture {
public:
    /// Starts both clusters (in parallel) and creates the schema on both; the daemon is
    /// configured but not started.
    explicit ReplicationFixture(FixtureOptions options);

    [[nodiscard]] TestCluster& source() { return *source_; }
    [[nodiscard]] TestCluster& target() { return *target_; }
    [[nodiscard]] DaemonProcess& daemon() { return *daemon_; }
    [[nodiscard]] const std::filesystem::path& work_dir() const { return work_.path(); }

    /// Starts the daemon and waits until its slot is active. False on timeout or early exit.
    [[nodiscard]] bool start_and_wait_streaming(std::chrono::milliseconds timeout = std::chrono::seconds(30));

    /// wait_until_converged on `tables`, giving up early if the daemon exited.
    [[nodiscard]] bool converged(const std::vector<std::string>& tables, std::chrono::milliseconds timeout);

private:
    std::unique_ptr<TestCluster> source_;
    std::unique_ptr<TestCluster> target_;
    TempDir work_;
    std::unique_ptr<DaemonProcess> daemon_;
};

} // namespace pgshift::test
