// Indexes and constraints made on the source while pgshift runs reach the target
// (apply/later_objects.hpp has what is compared and how each one is built).
//
// Design notes
// - Its own thread for the daemon's life, looking every k_look_interval while a session streams
//   (not during the initial copy, whose index step builds what the schema dump holds): a
//   concurrent index build can take minutes, which the monitor thread's lag probes and table
//   watch must not wait for. It follows the direction streaming now.
// - schema: copy builds what the target lacks, one object at a time; schema: verify only
//   reports. Status (schema_differences), the pgshift_schema_differences metric and the log name
//   each one until the target has it.
// - A switch (cutover, rollback) is refused while the new primary lacks one that enforces a rule
//   (unique, primary key, exclusion, check, foreign key), and with schema: copy while it lacks
//   any: an index pgshift is about to build is one the application's queries expect.
// - Rules the source dropped (a unique constraint, a check, a NOT NULL) are dropped on the
//   target with schema: copy at the next look; when apply meets a row that breaks one first, the
//   main loop drops it at once (change_target_for_rejected_row) instead of stopping apply.
// - So with a partition made on the source later: one the target lacks is created at the next
//   look, or at once when apply meets a row the target has no partition for. One the source
//   dropped is detached on the target while apply holds at a point of the stream past the drop
//   where the source holds no row of its range (verify::CommonPoint): a few milliseconds'
//   pause of apply, once per partition.
// - A stop cancels a running build; the invalid index it leaves is dropped and built again at
//   the next look of the next start.
#pragma once

#include "pgshift/apply/later_objects.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pgshift::daemon {

class DaemonState;

/// After apply stopped because the target rejected a row for rule `v`: whether the source still
/// has that rule (under its name, or its definition under another), or, for a row no partition
/// of the target's table takes, whether the source has partitions the target lacks. When the
/// source dropped the rule or has the partitions, with schema: copy the rule is dropped (the
/// partitions created) on the target and true returned (apply starts again at once); with
/// verify the log and the status's error name the statements. False also when the source has
/// the rule (the target diverged: the operator's to look at) or the comparison failed.
[[nodiscard]] bool change_target_for_rejected_row(const config::Config& cfg, const RuleViolation& v,
                                                  DaemonState& state);

class SchemaFollower {
public:
    SchemaFollower(const config::Config& base, const config::Config& reversed, DaemonState& state)
        : base_(base), reversed_(reversed), state_(state)
    {
    }

    /// The thread's body: looks while `streaming_ready` holds, until `stop`.
    void run(const std::atomic<bool>& streaming_ready, const std::atomic<bool>& stop);
    /// Cancels a build running now, if one is (from any thread, once `stop` is set).
    void cancel();

private:
    void look(const config::Config& cfg, const std::atomic<bool>& stop);
    void connect(const config::Config& cfg);
    /// Runs `o`'s steps on the target while apply holds at a point of the source's stream where
    /// its source_guard holds (verify::CommonPoint); "" when done, else why not (yet).
    std::string change_at_common_point(const config::Config& cfg, const apply::LaterObject& o,
                                       const std::atomic<bool>& stop);

    const config::Config& base_;
    const config::Config& reversed_;
    DaemonState& state_;
    bool connected_reverse_ = false;
    std::unique_ptr<pg::Connection> source_, target_;
    std::mutex cancel_mutex_;
    std::unique_ptr<pg::Canceller> canceller_; // guarded by cancel_mutex_
    std::atomic<bool> building_{false};         ///< a statement of a build runs on the target
    std::map<std::string, std::string> failed_; ///< object -> its last build error (logged when it changes)
    std::vector<std::string> reported_;         ///< what the last look reported
    std::string look_failed_;                   ///< why the last look failed (logged when it changes)
    /// Definitions replaced and tables analyzed on the target (object -> statement), once: a
    /// definition that still differs after its statement ran is printed otherwise by the
    /// target's server, and a table still without statistics has no rows to make them from.
    std::map<std::string, std::string> replaced_;
    std::uint64_t points_ = 0; ///< common points made (their temporary slots' names)
};

} // namespace pgshift::daemon
