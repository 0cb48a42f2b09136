// Whether a conninfo points at a transaction pooler, where logical replication cannot work.
//
// Design notes
// - pgshift needs one server session per connection for the connection's whole life: the
//   walsender protocol on the source (replication=database), and on the target the replication
//   origin bound to each apply session (pg_replication_origin_session_setup) and its
//   session_replication_role. A transaction pooler hands each transaction to whichever server
//   connection is free, so none of that holds.
// - Decided from the conninfo alone, so it is reported even when nothing answers there: port
//   6543 (Supabase's transaction pooler, Supavisor, and the PgBouncer setups that copy it) and
//   Supabase's pooler hosts (*.pooler.supabase.com), which carry no replication connection in
//   either mode. A pooler elsewhere is noticed once connected (check.cpp compares the backend
//   pid the server announced with pg_backend_pid(): a pooler announces its own).
// - Pure logic: unit-tested in tests/unit/check.
#pragma once

#include "pgshift/config/config.hpp"

#include <string>
#include <vector>

namespace pgshift::check {

/// One host of a conninfo that looks like a pooler.
struct PoolerHint {
    std::string host; ///< as written ("" = libpq's default, a local socket)
    std::string port; ///< as libpq would use it (5432 when nothing sets it)
    std::string why;  ///< what it is and the fix, one sentence
};

/// The hosts of `conninfo` (key=value or URI, host lists included) that point at a pooler.
/// `env` supplies PGHOST and PGPORT for a conninfo that sets no host or port, like libpq.
/// Throws ConfigError for a conninfo libpq cannot parse.
[[nodiscard]] std::vector<PoolerHint> find_poolers(const std::string& conninfo, const config::EnvLookup& env);

} // namespace pgshift::check
