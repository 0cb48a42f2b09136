// A StatusSnapshot with every field non-zero, shared by the metrics tests and the promtool dump.
#pragma once

#include "pgshift/control/status.hpp"

namespace pgshift::control::test {

/// Distinct values everywhere, so that a field wired to the wrong metric shows.
inline StatusSnapshot busy_snapshot()
{
    StatusSnapshot s;
    s.name = "demo";
    s.version = "0.1.0";
    s.state = "copying";
    s.direction = "reverse";
    s.paused = true;
    s.source = {true, "15.20"};
    s.target = {true, "16.4"};
    s.source_lsn = 0x100000000;
    s.received_lsn = 4000000000;
    s.applied_lsn = 3000000000;
    s.confirmed_lsn = 2000000000;
    s.lag_bytes = 1294967296;
    s.lag_seconds = 2.25;
    s.initial_copy.tables_total = 10;
    s.initial_copy.tables_done = 6;
    s.initial_copy.tables_copying = 3;
    s.initial_copy.rows_copied = 1000001;
    s.initial_copy.bytes_copied = 1000002;
    s.transactions_applied = 17;
    s.changes_insert = 11;
    s.changes_update = 12;
    s.changes_delete = 13;
    s.changes_truncate = 14;
    s.wal_received_bytes = 123456789;
    s.queue_changes = 21;
    s.queue_bytes = 22;
    s.slot_retained_wal_bytes = 23;
    s.cutover_write_downtime_seconds = 0.75;
    s.cutover.id = "cutover-1";
    s.cutover.phase = "done";
    s.cutover.phases = {{"checking", 0.01}, {"fencing", 0.125}};
    s.errors_source = 31;
    s.errors_decode = 32;
    s.errors_apply = 33;
    s.errors_copy = 34;
    s.errors_control = 35;
    s.reconnects_source = 41;
    s.reconnects_target = 42;
    // Cumulative, as the snapshot contract says: 1 at 5 ms, 3 at 10 ms, ... 20 at 30 s, 21 total.
    s.latency_bucket_counts = {1, 3, 4, 6, 8, 10, 12, 14, 16, 18, 19, 20};
    s.latency_count = 21;
    s.latency_sum = 123.5;
    s.last_error = "none";
    return s;
}

} // namespace pgshift::control::test
