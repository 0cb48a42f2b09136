// Fencing writes on the primary being left (SPEC section 3, cutover.fence).
//
// Design notes
// - read_only: every replicated table (and each of its partitions) carries a statement-level
//   BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE trigger, pgshift_fence_<name>, calling
//   pgshift.fence_<name>(). While fenced that function raises SQLSTATE 25006
//   (read_only_sql_transaction); lifted, it does nothing. A trigger enabled the default way
//   fires in every session whose session_replication_role is `origin`, which an ordinary role
//   cannot change (superuser-only unless granted), whatever it does with
//   default_transaction_read_only or transaction_read_only; pgshift's apply sessions run as
//   `replica`, so the reverse stream still writes there. COPY FROM and MERGE fire statement
//   triggers too. A superuser, or the owner of a table, can remove the fence on purpose.
// - Fencing is one transaction: replace the function (raise), create the triggers that are
//   missing, and LOCK the tables IN SHARE ROW EXCLUSIVE MODE. The lock waits for every
//   transaction holding a write lock on them (it may have started writing before the function
//   changed); once it is granted, every write that can still commit sees the fence, so the WAL
//   position read afterwards is final. A session that holds such a lock for longer than a
//   moment (idle in a transaction) is ended with pg_terminate_backend and the fence tried
//   again, until the deadline.
// - Lifting only replaces the function with one that does nothing: no table lock, so lifting
//   cannot get stuck behind anything; the triggers stay for the next fence.
// - The fence is verified, not assumed: in a new session with the defaults an application has,
//   a `DELETE ... WHERE false` on every fenced table must fail with 25006.
// - command: the operator's commands run with /bin/sh -c, bounded in time, their output logged.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace pgshift::cutover {

using Clock = std::chrono::steady_clock;

/// Fences the tables (SQL names, e.g. "public"."orders") of the database `conninfo` points at.
/// Returns how many other sessions had to be ended. Throws (std::runtime_error and PgError) when
/// it cannot; the caller lifts the fence then.
int fence_read_only(const std::string& conninfo, const std::string& migration, const std::vector<std::string>& tables,
                    Clock::time_point deadline, const std::function<bool()>& interrupted);

/// Lifts the fence (idempotent; nothing happens where no fence was ever set up).
void lift_read_only(const std::string& conninfo, const std::string& migration);

/// Whether the fence is up on that database now (the function exists and raises).
[[nodiscard]] bool read_only_fenced(const std::string& conninfo, const std::string& migration);

/// Runs `command` with /bin/sh -c and the environment `env` added; throws std::runtime_error
/// naming `what`, the exit status and the last lines of its output when it fails or outlives
/// `timeout` (then it is killed).
void run_command(const std::string& what, const std::string& command, const std::map<std::string, std::string>& env,
                 std::chrono::milliseconds timeout);

} // namespace pgshift::cutover
