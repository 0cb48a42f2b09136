// Table digests and convergence checks between a source and a target cluster.
#pragma once

#include "harness/cluster.hpp"

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

namespace pgshift::test {

class DaemonProcess;

/// Row count and an order-independent md5 of every row's text form.
struct TableDigest {
    std::string count;
    std::string md5;
    bool operator==(const TableDigest&) const = default;
};

/// "count=N md5=..." (also what Catch2 prints for a failed comparison).
std::ostream& operator<<(std::ostream& out, const TableDigest& digest);

/// Digest of `table`, an SQL-ready (already quoted where needed) qualified name such as
/// `public.t` or `"My Schema"."select"`:
/// SELECT count(*), md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM <table> t
[[nodiscard]] TableDigest table_digest(pg::Connection& conn, const std::string& table);

/// One line per table whose digest differs (or cannot be computed) between the two
/// clusters: "public.t: source count=3 md5=... target count=2 md5=...". Empty when all match.
[[nodiscard]] std::vector<std::string> compare_tables(pg::Connection& source, pg::Connection& target,
                                                      const std::vector<std::string>& tables);

/// Prints the daemon's and both servers' replication positions, `pgshift status` and the last
/// log lines: what a failed convergence needs to be understood from a CI excerpt.
void print_replication_state(TestCluster& source, TestCluster& target, DaemonProcess& daemon);

/// Polls compare_tables every 500 ms until every table matches (true) or `timeout`
/// passes (false, after printing the differing tables to stderr). When `daemon` is
/// given and has exited, gives up early.
[[nodiscard]] bool wait_until_converged(TestCluster& source, TestCluster& target,
                                        const std::vector<std::string>& tables, std::chrono::milliseconds timeout,
                                        DaemonProcess* daemon = nullptr);

/// Polls `SELECT active FROM pg_replication_slots WHERE slot_name = $1` every 200 ms
/// until true (streaming). False on timeout or when `daemon` exited.
[[nodiscard]] bool wait_for_streaming(TestCluster& source, const std::string& slot_name,
                                      std::chrono::milliseconds timeout, DaemonProcess* daemon = nullptr);

/// The PID of the walsender holding the slot, or 0 when the slot is inactive or missing.
[[nodiscard]] int slot_active_pid(TestCluster& source, const std::string& slot_name);

/// Runs the same SQL on both clusters (schema set-up before the daemon starts).
void exec_on_both(TestCluster& source, TestCluster& target, const std::string& sql);

/// Runs a script one statement at a time, so that every statement outside an explicit
/// BEGIN ... COMMIT is its own transaction (a multi-statement simple query would run as
/// one implicit transaction, and a BEGIN inside it would swallow the statements before it).
/// Statements are split at a ';' that ends a line; the script must not have such a ';'
/// inside a literal.
void exec_statements(TestCluster& cluster, const std::string& script);

/// Joins lines with '\n'.
[[nodiscard]] std::string join_lines(const std::vector<std::string>& lines);

} // namespace pgshift::test
