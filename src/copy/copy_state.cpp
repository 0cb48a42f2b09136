// The initial copy's persisted state on the target (pgshift.copy_runs, pgshift.copy_tables).
#include "pgshift/copy/copy_state.hpp"

namespace pgshift::copy {

namespace {

constexpr const char* k_ddl =
    "CREATE SCHEMA IF NOT EXISTS pgshift; "
    "CREATE TABLE IF NOT EXISTS pgshift.copy_runs ("
    "  migration text PRIMARY KEY,"
    "  state text NOT NULL CHECK (state IN ('copying', 'indexing', 'done')),"
    "  slot text NOT NULL,"
    "  consistent_point pg_lsn,"
    "  attempts int NOT NULL DEFAULT 1,"
    "  started_at timestamptz NOT NULL DEFAULT now(),"
    "  finished_at timestamptz); "
    "CREATE TABLE IF NOT EXISTS pgshift.copy_tables ("
    "  migration text NOT NULL,"
    "  table_name text NOT NULL,"
    "  table_sql text NOT NULL,"
    "  state text NOT NULL CHECK (state IN ('pending', 'done')),"
    "  rows bigint NOT NULL DEFAULT 0,"
    "  bytes bigint NOT NULL DEFAULT 0,"
    "  finished_at timestamptz,"
    "  sync_lsn pg_lsn,"
    "  PRIMARY KEY (migration, table_name)); "
    "COMMENT ON SCHEMA pgshift IS 'pgshift: state of the initial copy (safe to drop once the migration is finished)'";

} // namespace

CopyRun read_run(pg::Connection& target, const std::string& migration)
{
    CopyRun run;
    if (target.exec("SELECT to_regclass('pgshift.copy_runs') IS NOT NULL AND "
                    "to_regclass('pgshift.copy_tables') IS NOT NULL")
            .get(0, 0) != "t")
        return run;
    auto r = target.exec_params("SELECT state, slot, coalesce(consistent_point::text, '0/0'), attempts, "
                                "started_at::text FROM pgshift.copy_runs WHERE migration = $1",
                                {migration});
    if (r.rows() == 0)
        return run;
    run.exists = true;
    run.state = r.str(0, 0);
    run.slot = r.str(0, 1);
    run.consistent_point = Lsn::parse(r.get(0, 2)).value_or(Lsn());
    run.attempts = std::stoi(r.str(0, 3));
    run.started_at = r.str(0, 4);
    auto t = target.exec_params("SELECT table_sql, table_name, state, coalesce(sync_lsn::text, '0/0') "
                                "FROM pgshift.copy_tables WHERE migration = $1 ORDER BY table_name",
                                {migration});
    for (int i = 0; i < t.rows(); ++i) {
        run.table_sql.push_back(t.str(i, 0));
        auto sync = Lsn::parse(t.get(i, 3)).value_or(Lsn());
        if (t.get(i, 2) == "done" && !sync.is_zero()) {
            run.tables_done[t.str(i, 1)] = sync;
            run.done_sql.push_back(t.str(i, 0));
        }
    }
    return run;
}

void begin_run(pg::Connection& target, const std::string& migration, const std::string& slot,
               const std::vector<std::pair<std::string, std::string>>& tables)
{
    std::vector<std::string> names, sqls;
    for (const auto& [display, sql] : tables) {
        names.push_back(display);
        sqls.push_back(sql);
    }
    pg::in_transaction(target, [&] {
        target.exec(k_ddl);
        target.exec_params("INSERT INTO pgshift.copy_runs (migration, state, slot) VALUES ($1, 'copying', $2) "
                           "ON CONFLICT (migration) DO UPDATE SET state = 'copying', slot = excluded.slot, "
                           "consistent_point = NULL, attempts = pgshift.copy_runs.attempts + 1, started_at = now(), "
                           "finished_at = NULL",
                           {migration, slot});
        target.exec_params("DELETE FROM pgshift.copy_tables WHERE migration = $1", {migration});
        target.exec_params("INSERT INTO pgshift.copy_tables (migration, table_name, table_sql, state) "
                           "SELECT $1, n, s, 'pending' FROM unnest($2::text[], $3::text[]) AS t(n, s)",
                           {migration, pg::text_array(names), pg::text_array(sqls)});
    });
}

void resume_run(pg::Connection& target, const std::string& migration,
                const std::vector<std::pair<std::string, std::string>>& tables)
{
    std::vector<std::string> names, sqls;
    for (const auto& [display, sql] : tables) {
        names.push_back(display);
        sqls.push_back(sql);
    }
    pg::in_transaction(target, [&] {
        target.exec_params("UPDATE pgshift.copy_runs SET state = 'copying', attempts = attempts + 1, "
                           "finished_at = NULL WHERE migration = $1",
                           {migration});
        target.exec_params("INSERT INTO pgshift.copy_tables (migration, table_name, table_sql, state) "
                           "SELECT $1, n, s, 'pending' FROM unnest($2::text[], $3::text[]) AS t(n, s) "
                           "ON CONFLICT (migration, table_name) DO NOTHING",
                           {migration, pg::text_array(names), pg::text_array(sqls)});
    });
}

void set_consistent_point(pg::Connection& target, const std::string& migration, Lsn lsn)
{
    target.exec_params("UPDATE pgshift.copy_runs SET consistent_point = $2 WHERE migration = $1",
                       {migration, lsn.str()});
}

void table_done(pg::Connection& target, const std::string& migration, const std::string& table,
                std::uint64_t rows, std::uint64_t bytes, Lsn sync_lsn)
{
    target.exec_params("UPDATE pgshift.copy_tables SET state = 'done', rows = $3, bytes = $4, finished_at = now(), "
                       "sync_lsn = $5 WHERE migration = $1 AND table_name = $2",
                       {migration, table, std::to_string(rows), std::to_string(bytes), sync_lsn.str()});
}

void set_run_state(pg::Connection& target, const std::string& migration, const std::string& state)
{
    // The copy sessions commit asynchronously; this commit is synchronous and therefore flushes
    // the WAL of all of them first (see the header).
    pg::in_transaction(target, [&] {
        target.exec("SET LOCAL synchronous_commit = on");
        target.exec_params("UPDATE pgshift.copy_runs SET state = $2, "
                           "finished_at = CASE WHEN $2 = 'done' THEN now() END WHERE migration = $1",
                           {migration, state});
    });
}

} // namespace pgshift::copy
