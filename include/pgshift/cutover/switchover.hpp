// Cutover and rollback (SPEC section 3): one procedure; which server is the old primary and
// which the new one follows from the direction streaming now. Also the start-up recovery of an
// operation a crash interrupted, and `finish`.
//
// Design notes
// - Terms: the *old primary* is the upstream of the direction streaming now (the source before
//   a cutover, the target before a rollback), the *new primary* its downstream. The *home*
//   server, where the state is persisted (switch_state.hpp), is always the configured target.
// - Phases, each persisted before it starts and logged with its duration: fencing (fence.hpp),
//   draining (read the old primary's final WAL position F; apply holds at F, a transactional
//   logical message written after F tells it when everything before arrived: apply::Hold),
//   syncing_sequences (sequences.hpp), verifying (verify::Runner, counts or checksums, both sides
//   at one LSN while fenced), switching (the new direction's publication and slot are created
//   on the new primary while the old one is fenced, so no write can fall between the two
//   streams, rule 12; the new direction's origins on the old primary start at the slot's
//   consistent point; then switch_command), done. The session keeps streaming all along.
// - The commit point is the persisted direction flip after switch_command. Before it, any
//   failure, cutover.timeout_seconds, a stop signal or a failed session aborts: the new slot is
//   dropped, the fence lifted (or unfence_command run), and streaming goes on as before: nothing
//   stopped. After it, the daemon stops the old direction's session, drops its slot (complete())
//   and streams the new way. The old primary stays fenced: it is the new stream's target.
// - Recovery (recover(), at start-up): an operation that had not recorded the new slot and
//   origins ready is aborted as above. From `ready` on it is completed: switch_command may have
//   repointed clients already (it runs again: it must be idempotent), and with the old primary
//   fenced, completing is the outcome that cannot lose a write.
// - Write downtime: from the moment the fence is up to the commit point.
#pragma once

#include "pgshift/apply/hold.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/control/status.hpp"
#include "pgshift/cutover/switch_state.hpp"
#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace pgshift::verify {
class Runner;
}

namespace pgshift::cutover {

/// Changes the operation's report (the daemon's status) under its lock.
using ReportFn = std::function<void(const std::function<void(control::SwitchReport&)>&)>;

/// What the procedure needs from the running daemon.
struct Hooks {
    /// Non-empty when the operation must stop: a stop signal, the streaming session failed.
    std::function<std::string()> interrupted;
    apply::Hold& hold;          ///< apply's hold point (draining)
    verify::Runner& verifier;   ///< the streaming direction's comparison runner
    std::function<void()> beat; ///< keeps /livez alive during long waits
    ReportFn report;
    /// At the commit point, before `done` is reported: the daemon's status flips direction.
    std::function<void()> committed;
};

class Switchover {
public:
    /// `base`: the configuration as loaded (forward); `reverse_now`: the direction streaming now.
    Switchover(const config::Config& base, bool reverse_now, Hooks hooks);

    /// Runs the operation up to its commit point. True: committed, the caller stops the streaming
    /// session and calls complete(); false: aborted (or failed), streaming goes on.
    bool run();
    /// After the old direction's session stopped: drops its slot on the old primary.
    void complete();

    /// At start-up, before any session: finishes or undoes an interrupted operation (see the
    /// design notes), drops a slot the other direction left behind, and loads the last
    /// operation's report. Returns the direction to stream (true: reverse), or nothing when the
    /// migration was finished.
    static std::optional<bool> recover(const config::Config& base, const ReportFn& report);

    /// `pgshift finish`: drops both directions' slots, publications and origins on both servers
    /// (streaming must have stopped) and records the migration as finished.
    static void finish(const config::Config& base);

private:
    void phase(const std::string& name);
    void stall(const std::string& point);
    void check_time() const;
    void fence();
    void drain();
    void sync();
    void verify();
    void prepare_new_direction();
    void run_switch_command();
    void commit();
    void abort(const std::string& reason);
    void persist();

    const config::Config& base_;
    const bool reverse_now_;
    const config::Config from_; ///< the direction streaming now
    const config::Config to_;   ///< the direction after the switch
    Hooks hooks_;
    std::string kind_;
    std::chrono::steady_clock::time_point started_, deadline_, phase_started_;
    std::optional<std::chrono::steady_clock::time_point> fenced_at_;
    bool fence_started_ = false, slot_created_ = false;
    std::string phase_;
    std::string test_stall_; ///< PGSHIFT_TEST_CUTOVER_STALL: a phase to wait in (tests only)
    std::unique_ptr<pg::Connection> home_;
    Record rec_;
};

} // namespace pgshift::cutover
