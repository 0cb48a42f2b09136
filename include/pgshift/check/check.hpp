// `pgshift check` (SPEC section 6): every reason `pgshift run` would fail, or regret starting,
// found in one pass over the configuration and both servers.
//
// Design notes
// - Read-only: nothing is created or changed on either server. The only thing that resembles
//   a side effect is one short replication connection to the source (IDENTIFY_SYSTEM), the
//   connection `run` opens, because only opening it proves pg_hba.conf and any pooler let it
//   through; and one to the target, the connection of the reverse stream after cutover.
// - Every check is independent. Each runs as a named step; a step whose query fails (a
//   privilege missing, a catalog the role may not read) becomes that step's problem and the
//   other steps still run. A side that cannot be connected to is reported once, and its own
//   checks and those that need both sides are skipped.
// - Severity: an error means `pgshift run` would refuse to start or fail soon after (missing
//   table, missing privilege); a warning means it would run but something may hurt later
//   (unlimited WAL retention, leftovers of an earlier run). The exit code is 0 iff no error.
// - Cutover and rollback: what they will need (the write fence, the sequence sync, cutover's
//   record on the target, and the reverse stream: the target as upstream, the source as apply
//   target) is checked too, as warnings, since streaming works without it. Each message starts
//   "cutover will fail" or "rollback will fail" and its code "cutover_" or "rollback_". The
//   reverse stream is checked by the forward checks run with the sides swapped (Config::reversed(),
//   so the _rev object names): what setting it up needs fails the cutover, which sets it up
//   before switching and is undone when it cannot; what streaming needs fails the rollback.
// - Where `run` has a check, the same function is called (reader::select_tables for replica
//   identities, reader::require_logical_wal, reader::read_slot, queue::check_spill_dir,
//   config::read_token_file), so the two cannot drift apart. XXX: the target origin capacity
//   repeats apply::Engine::connect's arithmetic, because connect() also ends stale sessions
//   and cannot be called read-only; keep them in step.
// - Messages name the side, the object and the fix; they never contain a password (libpq's
//   connection errors do not, and conninfos are only shown as host:port).
#pragma once

#include "pgshift/config/config.hpp"

#include <string>
#include <vector>

namespace pgshift::check {

enum class Severity { error, warning };
/// Where the problem is: the configuration or the local machine, the source or the target.
enum class Side { config, source, target };

[[nodiscard]] const char* name(Severity s);
[[nodiscard]] const char* name(Side s);

struct Problem {
    Severity severity = Severity::error;
    Side side = Side::config;
    std::string code;    ///< stable, for scripts: "wal_level", "missing_column", ...
    std::string message; ///< one line: what is wrong, on which object, and how to fix it
};

struct Report {
    std::vector<Problem> problems;
    std::string source_version; ///< e.g. "15.18"; empty when the source was not reached
    std::string target_version;
    int tables = -1; ///< selected source tables; -1 when unknown

    [[nodiscard]] int count(Severity s) const;
    /// `pgshift run` would succeed: no error (warnings allowed).
    [[nodiscard]] bool ok() const { return count(Severity::error) == 0; }
};

/// Runs every check for `cfg`. `env` supplies PGHOST/PGPORT, as libpq would use them for a
/// conninfo without host or port. Never throws for a server's answer: problems are reported.
[[nodiscard]] Report run_checks(const config::Config& cfg, const config::EnvLookup& env);

/// One line per problem ("error: source: ..."), then one summary line starting "check ".
[[nodiscard]] std::string to_text(const Report& report);
/// One JSON document: {"ok", "errors", "warnings", "source_version", "target_version",
/// "tables", "problems": [{"severity", "side", "code", "message"}]}.
[[nodiscard]] std::string to_json(const Report& report);

} // namespace pgshift::check
