// Which way a migration streams, and its last cutover or rollback, persisted on the configured
// target (pgshift.switchover, one row per migration), so that a restart streams the right way
// and can finish or undo an operation that a crash interrupted (switchover.hpp).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <string>
#include <string_view>

namespace pgshift::cutover {

struct Record {
    bool reverse = false;  ///< the direction streaming now: false = forward (source to target)
    bool finished = false; ///< `pgshift finish` ran: nothing is left to do
    // The last operation (op_id empty: none ran).
    std::string op_id, kind, phase;
    bool ready = false; ///< the new direction's slot and origins exist: past this, a crash completes it
    std::string started_at, fenced_at, finished_at, final_lsn, error;
    double write_downtime_seconds = 0;
};

/// Reads the record; a default one (forward, no operation) when there is none.
[[nodiscard]] Record read_record(pg::Connection& home, const std::string& migration);
/// Writes the record (creating the table when needed), in one statement.
void write_record(pg::Connection& home, const std::string& migration, const Record& r);
/// Whether an operation in `phase` has ended (done, failed, aborted) or never started ("").
[[nodiscard]] bool terminal(std::string_view phase);

} // namespace pgshift::cutover
