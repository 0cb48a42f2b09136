// Fencing writes on the primary being left (see fence.hpp).
#include "pgshift/cutover/fence.hpp"

#include "pgshift/pg/connection.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace pgshift::cutover {

namespace {

using namespace std::chrono_literals;

/// How long one attempt waits for the table locks before it looks for the sessions in the way.
constexpr auto k_lock_attempt = "200ms";
/// SQLSTATE of lock_timeout.
constexpr std::string_view k_lock_not_available = "55P03";

std::string function_sql(const std::string& migration) { return "pgshift." + pg::quote_ident("fence_" + migration); }
std::string trigger_name(const std::string& migration) { return "pgshift_fence_" + migration; }

/// The fence function: raising while fenced, a no-op once lifted.
std::string function_ddl(const std::string& migration, bool fenced)
{
    std::string body =
        fenced ? "BEGIN RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', MESSAGE = format('%I.%I is "
                 "fenced by pgshift (migration %s): this server is no longer the primary', TG_TABLE_SCHEMA, "
                 "TG_TABLE_NAME, " + pg::quote_literal(migration) + "), HINT = 'Write to the new primary.'; END"
               : "BEGIN RETURN NULL; END";
    return "CREATE OR REPLACE FUNCTION " + function_sql(migration) +
           "() RETURNS trigger LANGUAGE plpgsql AS $pgshift_fence$ " + body + " $pgshift_fence$";
}

/// The fenced tables and every partition of them, one regclass text each.
std::vector<std::string> fenced_relations(pg::Connection& c, const std::vector<std::string>& tables)
{
    // pg_partition_tree() returns nothing for a table that is not partitioned: the table itself
    // comes from the list.
    auto r = c.exec_params("SELECT DISTINCT r.oid::regclass::text FROM unnest($1::text[]) t(name) "
                           "CROSS JOIN LATERAL (SELECT t.name::regclass AS relid UNION "
                           "  SELECT relid FROM pg_partition_tree(t.name::regclass)) p "
                           "JOIN pg_class r ON r.oid = p.relid WHERE r.relkind IN ('r', 'p') ORDER BY 1",
                           {pg::text_array(tables)});
    if (static_cast<std::size_t>(r.rows()) < tables.size())
        throw std::runtime_error("some tables to fence are not ordinary or partitioned tables");
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(r.str(i, 0));
    return out;
}

std::string join(const std::vector<std::string>& v)
{
    std::string s;
    for (const auto& x : v)
        s += (s.empty() ? "" : ", ") + x;
    return s;
}

/// One attempt: true when the fence is up (committed), false when the locks were not granted in time.
bool try_fence(pg::Connection& c, const std::string& migration, const std::vector<std::string>& tables)
{
    c.exec("BEGIN");
    try {
        c.exec(std::string("SET LOCAL lock_timeout = '") + k_lock_attempt + "'");
        if (c.exec("SELECT to_regnamespace('pgshift') IS NULL").get(0, 0) == "t")
            c.exec("CREATE SCHEMA pgshift");
        c.exec(function_ddl(migration, true));
        auto missing = c.exec_params("SELECT x.rel FROM unnest($1::text[]) x(rel) WHERE NOT EXISTS ("
                                     "SELECT 1 FROM pg_trigger WHERE tgrelid = x.rel::regclass AND tgname = $2)",
                                     {pg::text_array(fenced_relations(c, tables)), trigger_name(migration)});
        for (int i = 0; i < missing.rows(); ++i)
            c.exec("CREATE TRIGGER " + pg::quote_ident(trigger_name(migration)) +
                   " BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + missing.str(i, 0) +
                   " FOR EACH STATEMENT EXECUTE FUNCTION " + function_sql(migration) + "()");
        c.exec("LOCK TABLE " + join(tables) + " IN SHARE ROW EXCLUSIVE MODE");
        c.exec("COMMIT");
        return true;
    } catch (const pg::PgError& e) {
        try {
            c.exec("ROLLBACK");
        } catch (const pg::PgError&) {
        }
        if (e.sqlstate() == k_lock_not_available)
            return false;
        throw;
    }
}

/// Ends the sessions that hold a lock on the tables which the fence's lock waits for; returns
/// how many were ended.
int end_blockers(pg::Connection& c, const std::vector<std::string>& tables)
{
    auto r = c.exec_params(
        "SELECT DISTINCT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), coalesce(a.state, ''), "
        "       l.relation::regclass::text "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid() "
        "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "  AND l.relation = ANY($1::regclass[]) "
        "  AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', "
        "                 'ExclusiveLock', 'AccessExclusiveLock')",
        {pg::text_array(fenced_relations(c, tables))});
    int ended = 0;
    for (int i = 0; i < r.rows(); ++i) {
        try {
            if (c.exec_params("SELECT pg_terminate_backend($1::int)", {r.str(i, 0)}).get(0, 0) == "t") {
                ++ended;
                spdlog::warn("fence: ended session {} (role {}, application '{}', {}) holding a lock on {}",
                             r.get(i, 0), r.get(i, 1), r.get(i, 2), r.get(i, 3), r.get(i, 4));
            }
        } catch (const pg::PgError& e) {
            spdlog::warn("fence: cannot end session {} (role {}) holding a lock on {}: {} (grant pg_signal_backend "
                         "to pgshift's role); waiting for it",
                         r.get(i, 0), r.get(i, 1), r.get(i, 4), e.what());
        }
    }
    return ended;
}

/// Checks the fence from the catalog and by trying a write: throws when any table is not fenced.
void verify_fence(const std::string& conninfo, const std::string& migration, const std::vector<std::string>& tables)
{
    pg::Connection c(conninfo);
    auto rels = fenced_relations(c, tables);
    auto r = c.exec_params("SELECT x.rel FROM unnest($1::text[]) x(rel) WHERE NOT EXISTS ("
                           "SELECT 1 FROM pg_trigger WHERE tgrelid = x.rel::regclass AND tgname = $2 "
                           "AND tgenabled = 'O')",
                           {pg::text_array(rels), trigger_name(migration)});
    std::vector<std::string> open;
    for (int i = 0; i < r.rows(); ++i)
        open.push_back(r.str(i, 0));
    if (!open.empty())
        throw std::runtime_error("the fence trigger is missing or disabled on " + join(open));
    if (!read_only_fenced(conninfo, migration))
        throw std::runtime_error("the fence function " + function_sql(migration) + " does not raise");
    // A write as an application would try it (session_replication_role origin), where the role
    // may delete; every one must be refused with 25006.
    c.exec("BEGIN");
    if (c.exec("SHOW session_replication_role").get(0, 0) != "origin")
        c.exec("SET LOCAL session_replication_role = origin");
    c.exec("DO $probe$ DECLARE t text; passed text := ''; BEGIN "
           "FOREACH t IN ARRAY " + pg::quote_literal(pg::text_array(rels)) + "::text[] LOOP "
           "  CONTINUE WHEN NOT has_table_privilege(t::regclass, 'DELETE'); "
           "  BEGIN EXECUTE format('DELETE FROM %s WHERE false', t); passed := passed || ' ' || t; "
           "  EXCEPTION WHEN read_only_sql_transaction THEN NULL; END; "
           "END LOOP; "
           "IF passed <> '' THEN RAISE EXCEPTION 'a write passed the fence on:%', passed; END IF; END $probe$");
    c.exec("ROLLBACK");
}

} // namespace

int fence_read_only(const std::string& conninfo, const std::string& migration, const std::vector<std::string>& tables,
                    Clock::time_point deadline, const std::function<bool()>& interrupted)
{
    if (tables.empty())
        throw std::runtime_error("no table to fence");
    pg::Connection c(pg::conninfo_with(conninfo, {{"application_name", "pgshift_" + migration + "_fence"}}));
    int ended = 0;
    for (int attempt = 1;; ++attempt) {
        if (try_fence(c, migration, tables))
            break;
        if (interrupted())
            throw std::runtime_error("interrupted while waiting for the tables' locks");
        if (Clock::now() > deadline)
            throw std::runtime_error("the tables' locks were not granted before the deadline (sessions in the way "
                                     "could not be ended: grant pg_signal_backend to pgshift's role)");
        ended += end_blockers(c, tables);
    }
    verify_fence(conninfo, migration, tables);
    return ended;
}

void lift_read_only(const std::string& conninfo, const std::string& migration)
{
    pg::Connection c(pg::conninfo_with(conninfo, {{"application_name", "pgshift_" + migration + "_fence"}}));
    if (c.exec_params("SELECT to_regprocedure($1) IS NOT NULL", {function_sql(migration) + "()"}).get(0, 0) != "t")
        return;
    c.exec(function_ddl(migration, false));
}

bool read_only_fenced(const std::string& conninfo, const std::string& migration)
{
    pg::Connection c(conninfo);
    auto r = c.exec_params("SELECT prosrc LIKE '%RAISE EXCEPTION%' FROM pg_proc WHERE oid = to_regprocedure($1)",
                           {function_sql(migration) + "()"});
    return r.rows() == 1 && r.get(0, 0) == "t";
}

void run_command(const std::string& what, const std::string& command, const std::map<std::string, std::string>& env,
                 std::chrono::milliseconds timeout)
{
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
        throw std::runtime_error(what + ": pipe: " + std::strerror(errno));
    std::vector<std::string> vars;
    for (char** e = environ; *e; ++e) {
        std::string_view v(*e);
        auto eq = v.find('=');
        if (eq == std::string_view::npos || !env.count(std::string(v.substr(0, eq))))
            vars.emplace_back(v);
    }
    for (const auto& [k, v] : env)
        vars.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& v : vars)
        envp.push_back(v.data());
    envp.push_back(nullptr);
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};

    pid_t pid = ::fork();
    if (pid < 0)
        throw std::runtime_error(what + ": fork: " + std::strerror(errno));
    if (pid == 0) {
        ::setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr); // the daemon blocks its signals; the command must not inherit that
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            ::dup2(devnull, 0);
        ::execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
        ::_exit(127);
    }
    ::close(out[1]);
    std::deque<std::string> lines;
    std::string partial;
    auto keep = [&](std::string line) {
        spdlog::info("{}: {}", what, line);
        lines.push_back(std::move(line));
        if (lines.size() > 5)
            lines.pop_front();
    };
    auto deadline = Clock::now() + timeout;
    bool timed_out = false;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            ::kill(-pid, SIGKILL);
            break;
        }
        pollfd p{out[0], POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 200)));
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        char buf[4096];
        auto got = ::read(out[0], buf, sizeof buf);
        if (got <= 0)
            break; // EOF: the command (and whatever it started with our stdout) is done
        partial.append(buf, static_cast<std::size_t>(got));
        for (auto nl = partial.find('\n'); nl != std::string::npos; nl = partial.find('\n')) {
            keep(partial.substr(0, nl));
            partial.erase(0, nl + 1);
        }
    }
    if (!partial.empty())
        keep(partial);
    ::close(out[0]);
    int status = 0;
    // The output ended; the shell exits at once (or was killed).
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string tail;
    for (const auto& l : lines)
        tail += "\n  " + l;
    if (timed_out)
        throw std::runtime_error(what + " did not finish within " + std::to_string(timeout.count()) +
                                 " ms and was killed" + tail);
    if (WIFSIGNALED(status))
        throw std::runtime_error(what + " was killed by signal " + std::to_string(WTERMSIG(status)) + tail);
    if (WEXITSTATUS(status) != 0)
        throw std::runtime_error(what + " failed with exit status " + std::to_string(WEXITSTATUS(status)) + tail);
}

} // namespace pgshift::cutover
