// Tables that appear on the source while pgshift runs: noticed within seconds, joined to the
// replication with their existing rows, or reported loudly when they cannot be.
//
// Design notes
// - Polled from the monitor thread every few seconds (one catalog query on the source).
// - Joining a table must lose nothing and duplicate nothing: rows committed before the table
//   joined the publication are not decoded, rows committed after are. So one source
//   transaction takes LOCK ... IN EXCLUSIVE MODE on the table (writers wait, readers do not;
//   lock_timeout keeps the application's writers from queueing behind us for long), adds the
//   table to the publication and COPYs its rows out; the COPY therefore sees exactly the rows
//   committed before the ALTER PUBLICATION's commit, and every later write is streamed.
// - The target side is one transaction that copies into an empty table. It commits before the
//   source transaction: if the source commit then fails, the table is not in the publication
//   and the next poll copies again, truncating what this run copied (remembered in memory; a
//   table that holds rows pgshift did not put there is never overwritten, it is reported).
// - A table the target lacks is created there from the source's definition (schema_copy.hpp)
//   when the configuration has schema: copy and the initial copy enabled, or schema: copy in the
//   reverse direction (the same machinery as the initial copy's); otherwise it is reported until
//   someone creates it.
// - A table whose replica identity would make the source refuse UPDATE/DELETE once published,
//   or that the target lacks, is not added; status, /readyz, metrics and the log say so until
//   it is fixed, and then it joins like any other.
// - Do no harm: a published table that loses its replica identity (its primary key dropped,
//   REPLICA IDENTITY NOTHING) makes the source refuse the application's UPDATE and DELETE on it.
//   The next poll removes it from the publication, so the application's writes work again
//   within seconds; the table is reported as not replicated (its target copy no longer follows)
//   and joins again, copied anew, once its identity is back and its target table was emptied.
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/reader/catalog.hpp"

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace pgshift::daemon {

class DaemonState;

class TableWatch {
public:
    TableWatch(const config::Config& cfg, DaemonState& state) : cfg_(cfg), state_(state) {}

    /// One poll: joins every selected table missing from the publication that can join, and
    /// publishes the list of those that cannot (with reasons) to the daemon's status.
    /// Called from the monitor thread only. Throws pg::PgError when `source` breaks.
    void poll(pg::Connection& source);

private:
    /// Adds `table` to the publication with its rows copied; empty on success, else the reason
    /// it is not replicated yet.
    std::string join(pg::Connection& source, const reader::SourceTable& table);
    /// Removes a published `table` that lost its replica identity from the publication (see
    /// the design notes); returns the problem to report.
    std::string unpublish(pg::Connection& source, const reader::SourceTable& table);
    pg::Connection& target();
    /// schema: copy creates a new table on the target with the initial copy enabled, and always in
    /// the reverse direction: a table the application made on the new primary after a cutover
    /// must exist on the old one for a rollback.
    [[nodiscard]] bool creates_tables() const
    {
        return cfg_.schema == config::SchemaMode::copy && (cfg_.initial_copy.enabled || cfg_.is_reverse());
    }

    const config::Config& cfg_;
    DaemonState& state_;
    std::unique_ptr<pg::Connection> target_;
    std::set<std::string> partial_; ///< tables whose rows this run committed on the target but that did not join
    std::set<std::string> unpublished_; ///< tables unpublish() removed (their target copy is stale)
    std::vector<std::string> reported_;
    std::chrono::steady_clock::time_point last_report_{};
};

} // namespace pgshift::daemon
