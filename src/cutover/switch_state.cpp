// The persisted direction and last operation (see switch_state.hpp).
#include "pgshift/cutover/switch_state.hpp"

namespace pgshift::cutover {

namespace {

constexpr const char* k_table_ddl =
    "CREATE TABLE IF NOT EXISTS pgshift.switchover ("
    "  migration text PRIMARY KEY,"
    "  direction text NOT NULL CHECK (direction IN ('forward', 'reverse')),"
    "  finished boolean NOT NULL DEFAULT false,"
    "  op_id text, kind text, phase text,"
    "  ready boolean NOT NULL DEFAULT false,"
    "  started_at text, fenced_at text, finished_at text, final_lsn text,"
    "  write_downtime_seconds float8,"
    "  error text,"
    "  updated_at timestamptz NOT NULL DEFAULT now())";

} // namespace

bool terminal(std::string_view phase)
{
    return phase.empty() || phase == "done" || phase == "failed" || phase == "aborted";
}

Record read_record(pg::Connection& home, const std::string& migration)
{
    Record r;
    if (home.exec("SELECT to_regclass('pgshift.switchover') IS NOT NULL").get(0, 0) != "t")
        return r;
    auto q = home.exec_params("SELECT direction, finished, coalesce(op_id, ''), coalesce(kind, ''), "
                              "coalesce(phase, ''), ready, coalesce(started_at, ''), coalesce(fenced_at, ''), "
                              "coalesce(finished_at, ''), coalesce(final_lsn, ''), coalesce(error, ''), "
                              "coalesce(write_downtime_seconds, 0) FROM pgshift.switchover WHERE migration = $1",
                              {migration});
    if (q.rows() == 0)
        return r;
    r.reverse = q.get(0, 0) == "reverse";
    r.finished = q.get(0, 1) == "t";
    r.op_id = q.str(0, 2);
    r.kind = q.str(0, 3);
    r.phase = q.str(0, 4);
    r.ready = q.get(0, 5) == "t";
    r.started_at = q.str(0, 6);
    r.fenced_at = q.str(0, 7);
    r.finished_at = q.str(0, 8);
    r.final_lsn = q.str(0, 9);
    r.error = q.str(0, 10);
    r.write_downtime_seconds = std::stod(q.str(0, 11));
    return r;
}

void write_record(pg::Connection& home, const std::string& migration, const Record& r)
{
    if (home.exec("SELECT to_regclass('pgshift.switchover') IS NULL").get(0, 0) == "t") {
        if (home.exec("SELECT to_regnamespace('pgshift') IS NULL").get(0, 0) == "t")
            home.exec("CREATE SCHEMA IF NOT EXISTS pgshift");
        home.exec(k_table_ddl);
    }
    home.exec_params(
        "INSERT INTO pgshift.switchover (migration, direction, finished, op_id, kind, phase, ready, started_at, "
        "  fenced_at, finished_at, final_lsn, error, write_downtime_seconds, updated_at) "
        "VALUES ($1, $2, $3, nullif($4, ''), nullif($5, ''), nullif($6, ''), $7, nullif($8, ''), nullif($9, ''), "
        "  nullif($10, ''), nullif($11, ''), nullif($12, ''), $13, now()) "
        "ON CONFLICT (migration) DO UPDATE SET direction = excluded.direction, finished = excluded.finished, "
        "  op_id = excluded.op_id, kind = excluded.kind, phase = excluded.phase, ready = excluded.ready, "
        "  started_at = excluded.started_at, fenced_at = excluded.fenced_at, finished_at = excluded.finished_at, "
        "  final_lsn = excluded.final_lsn, error = excluded.error, "
        "  write_downtime_seconds = excluded.write_downtime_seconds, updated_at = now()",
        {migration, r.reverse ? "reverse" : "forward", r.finished ? "true" : "false", r.op_id, r.kind, r.phase,
         r.ready ? "true" : "false", r.started_at, r.fenced_at, r.finished_at, r.final_lsn, r.error,
         std::to_string(r.write_downtime_seconds)});
}

} // namespace pgshift::cutover
