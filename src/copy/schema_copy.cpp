// schema: verify / schema: copy: comparing the selected tables, and creating what the target
// lacks from pg_dump's definitions, before (tables, types, ...) and after (indexes, constraints)
// the rows.
#include "pgshift/copy/schema_copy.hpp"

#include "pgshift/apply/columns.hpp"
#include "pgshift/check/schema.hpp"
#include "pgshift/common/address.hpp"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

extern char** environ;

namespace pgshift::copy {

namespace {

namespace fs = std::filesystem;

/// A catalog object of the source that the selected tables need, and how to tell whether the
/// target has it.
struct Needed {
    std::string classid, objid; ///< as pg_restore -l prints them ("1259 16390")
    std::string probe;          ///< SQL (bool) run on the target: true when it exists there
    std::string toc_name;       ///< "DESC schema name " for TOC entries without an OID (attach, owned by)
    std::string what;           ///< for messages
};

/// A temporary directory for the dump, removed on destruction.
class WorkDir {
public:
    WorkDir()
    {
        auto base = fs::temp_directory_path() / "pgshift-schema-XXXXXX";
        std::string tmpl = base.string();
        if (!::mkdtemp(tmpl.data()))
            throw InternalError("could not create a temporary directory for pg_dump in " +
                                fs::temp_directory_path().string());
        path_ = tmpl;
    }
    ~WorkDir()
    {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    [[nodiscard]] const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string read_file(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Runs `argv` (no shell) with PGPASSWORD set when `password` is non-empty, stdout to `out`,
/// stderr to `err`. Returns the exit code (-1 when it could not start).
int run_tool(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err,
             const std::string& password)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e)
        if (std::string_view(*e).substr(0, 11) != "PGPASSWORD=")
            env_store.emplace_back(*e);
    if (!password.empty())
        env_store.push_back("PGPASSWORD=" + password);
    std::vector<char*> envp, args;
    for (auto& e : env_store)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_store = argv;
    for (auto& a : argv_store)
        args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// The major version in "pg_dump (PostgreSQL) 15.18 (Debian ...)"; 0 when unreadable.
int tool_major(const std::string& version_output)
{
    auto p = version_output.find(") ");
    if (p == std::string::npos)
        return 0;
    return std::atoi(version_output.c_str() + p + 2);
}

/// pg_dump to use for a source of major version `source_major`: $PGSHIFT_PG_DUMP, else the
/// newest /usr/lib/postgresql/<N>/bin/pg_dump, else pg_dump on the PATH. Throws ConfigError
/// with the fix when none is new enough.
std::string find_pg_dump_uncached(int source_major, const std::string& source_version)
{
    std::vector<std::string> candidates;
    if (const char* e = std::getenv("PGSHIFT_PG_DUMP"); e && *e) {
        candidates.emplace_back(e);
    } else {
        std::error_code ec;
        std::vector<std::pair<int, std::string>> found;
        for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
            auto bin = entry.path() / "bin" / "pg_dump";
            if (fs::exists(bin, ec))
                found.emplace_back(std::atoi(entry.path().filename().c_str()), bin.string());
        }
        std::sort(found.rbegin(), found.rend());
        for (auto& f : found)
            candidates.push_back(f.second);
        for (const char* dir : {"/usr/local/bin", "/usr/bin"})
            if (fs::exists(fs::path(dir) / "pg_dump", ec))
                candidates.push_back((fs::path(dir) / "pg_dump").string());
    }
    if (candidates.empty())
        throw ConfigError("schema: copy needs pg_dump and pg_restore of PostgreSQL " + std::to_string(source_major) +
                          " or newer on this machine, and none was found: install postgresql-client-" +
                          std::to_string(source_major) + " (or set PGSHIFT_PG_DUMP to a pg_dump binary)");
    WorkDir dir;
    std::string best_message;
    for (const auto& c : candidates) {
        int rc = run_tool({c, "--version"}, dir.path() / "v", dir.path() / "e", "");
        auto text = read_file(dir.path() / "v");
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
            text.pop_back();
        int major = rc == 0 ? tool_major(text) : 0;
        if (major >= source_major)
            return c;
        if (best_message.empty())
            best_message = c + " is " + (text.empty() ? "not runnable" : "\"" + text + "\"");
    }
    throw ConfigError("schema: copy needs pg_dump of PostgreSQL " + std::to_string(source_major) +
                      " or newer (the source runs " + source_version + "; an older pg_dump cannot read a newer "
                      "server), but " + best_message + ": install postgresql-client-" + std::to_string(source_major) +
                      " (or set PGSHIFT_PG_DUMP to a newer pg_dump), or create the tables on the target yourself and "
                      "use schema: verify");
}

/// find_pg_dump_uncached(), remembered per source major version and $PGSHIFT_PG_DUMP: every
/// candidate's `--version` costs a process start, and a run asks up to three times (the check,
/// then each step). Only a pg_dump that was found is remembered.
std::string find_pg_dump(int source_major, const std::string& source_version)
{
    static std::mutex mutex;
    static std::map<std::pair<int, std::string>, std::string> found;
    const char* e = std::getenv("PGSHIFT_PG_DUMP");
    const std::pair<int, std::string> key{source_major, e ? e : ""};
    {
        std::lock_guard lk(mutex);
        if (auto it = found.find(key); it != found.end())
            return it->second;
    }
    auto bin = find_pg_dump_uncached(source_major, source_version);
    std::lock_guard lk(mutex);
    found.emplace(key, bin);
    return bin;
}

std::string version_text(int v) { return std::to_string(v / 10000) + "." + std::to_string(v % 100); }

/// The selected tables the target lacks (by schema and name).
std::vector<reader::SourceTable> missing_tables(pg::Connection& target, const std::vector<reader::SourceTable>& tables)
{
    std::vector<reader::SourceTable> out;
    for (const auto& t : tables)
        if (target.exec("SELECT to_regclass(" + pg::quote_literal(t.sql()) + ") IS NULL").get(0, 0) == "t")
            out.push_back(t);
    return out;
}

/// The source objects `tables` need (themselves, their partitions, defaults, owned sequences,
/// indexes, constraints, triggers, and recursively the types, functions, sequences, schemas and
/// extensions those use), each with its existence probe for the target.
///
/// A probe answers false for what the target lacks and never fails. PostgreSQL 15's
/// to_regprocedure() raises an error, rather than returning NULL, when an argument type does not
/// exist (e.g. public.geometry_send(public.geometry) of an extension not yet created on the
/// target), and it does not accept argument names, which pg_get_function_identity_arguments()
/// prints: a function is probed by its arguments' qualified type names, and only once each of
/// those types exists.
std::vector<Needed> needed_objects(pg::Connection& source, const std::vector<reader::SourceTable>& tables)
{
    std::vector<std::string> names;
    for (const auto& t : tables)
        names.push_back(t.sql());
    // Edges: an object depends on what it references (pg_depend n/a/i/e, user objects only,
    // never another table: a foreign key does not pull its referenced table in); a relation
    // owns its defaults, sequences, indexes, constraints and triggers (they depend on it, 'a'
    // or 'i'); a composite type's attributes hang off its pg_class row.
    // The edges are computed once (MATERIALIZED), not at every step of the recursion. The
    // planner's estimates for the recursion are far off (thousands of rows for a handful),
    // enough to JIT-compile the query: 70-200 ms of compiling for a few ms of running.
    source.exec("SET jit = off");
    auto r = source.exec_params(R"sql(
WITH RECURSIVE
roots AS (
  SELECT t.name::regclass::oid AS oid FROM unnest($1::text[]) AS t(name)
  UNION
  SELECT p.relid::oid FROM unnest($1::text[]) AS t(name) CROSS JOIN LATERAL pg_partition_tree(t.name::regclass) p),
edges(fc, fo, tc, tob) AS MATERIALIZED (
  SELECT d.classid, d.objid, d.refclassid, d.refobjid FROM pg_depend d
  WHERE d.deptype IN ('n', 'a', 'i', 'e') AND d.refobjid >= 16384
    AND NOT (d.refclassid = 'pg_class'::regclass AND
             (SELECT relkind FROM pg_class WHERE oid = d.refobjid) NOT IN ('S', 'c'))
  UNION ALL
  SELECT d.refclassid, d.refobjid, d.classid, d.objid FROM pg_depend d
  WHERE d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass
    AND d.classid IN ('pg_attrdef'::regclass, 'pg_class'::regclass, 'pg_constraint'::regclass, 'pg_trigger'::regclass)
    AND d.objsubid = 0 AND d.refobjid >= 16384
    AND NOT (d.classid = 'pg_class'::regclass AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 't')
  UNION ALL
  SELECT 'pg_type'::regclass, t.oid, 'pg_class'::regclass, t.typrelid FROM pg_type t
  WHERE t.typtype = 'c' AND t.typrelid <> 0 AND t.oid >= 16384
),
objs(classid, objid) AS (
  SELECT 'pg_class'::regclass::oid, oid FROM roots
  UNION
  SELECT e.tc, e.tob FROM edges e JOIN objs o ON e.fc = o.classid AND e.fo = o.objid
)
SELECT o.classid::regclass::text, o.classid, o.objid,
  CASE o.classid
    WHEN 'pg_class'::regclass THEN (SELECT format('to_regclass(%L) IS NOT NULL', quote_ident(n.nspname) || '.' || quote_ident(c.relname)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.objid)
    WHEN 'pg_type'::regclass THEN (SELECT format('to_regtype(%L) IS NOT NULL', quote_ident(n.nspname) || '.' || quote_ident(t.typname)) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = o.objid)
    WHEN 'pg_proc'::regclass THEN (SELECT format('CASE WHEN %s THEN to_regprocedure(%L) IS NOT NULL ELSE false END', coalesce(string_agg(format('to_regtype(%L) IS NOT NULL', a.typ), ' AND ') FILTER (WHERE a.typ IS NOT NULL), 'true'), quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || coalesce(string_agg(a.typ, ', ' ORDER BY a.i), '') || ')') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace LEFT JOIN LATERAL (SELECT quote_ident(tn.nspname) || '.' || quote_ident(t.typname) AS typ, u.i FROM unnest(p.proargtypes) WITH ORDINALITY AS u(oid, i) JOIN pg_type t ON t.oid = u.oid JOIN pg_namespace tn ON tn.oid = t.typnamespace) a ON true WHERE p.oid = o.objid GROUP BY n.nspname, p.proname)
    WHEN 'pg_namespace'::regclass THEN (SELECT format('to_regnamespace(%L) IS NOT NULL', quote_ident(nspname)) FROM pg_namespace WHERE oid = o.objid)
    WHEN 'pg_extension'::regclass THEN (SELECT format('EXISTS (SELECT 1 FROM pg_extension WHERE extname = %L)', extname) FROM pg_extension WHERE oid = o.objid)
    WHEN 'pg_constraint'::regclass THEN (SELECT format('EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%L) AND conname = %L)', quote_ident(n.nspname) || '.' || quote_ident(c.relname), k.conname) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.oid = o.objid)
    WHEN 'pg_trigger'::regclass THEN (SELECT format('EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%L) AND tgname = %L)', quote_ident(n.nspname) || '.' || quote_ident(c.relname), g.tgname) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE g.oid = o.objid)
    WHEN 'pg_attrdef'::regclass THEN (SELECT format('to_regclass(%L) IS NOT NULL', quote_ident(n.nspname) || '.' || quote_ident(c.relname)) FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.oid = o.objid)
  END,
  CASE o.classid
    WHEN 'pg_class'::regclass THEN (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE OWNED BY ' WHEN 'i' THEN 'INDEX ATTACH ' ELSE 'TABLE ATTACH ' END || n.nspname || ' ' || c.relname || ' ' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.objid)
    WHEN 'pg_constraint'::regclass THEN (SELECT 'INDEX ATTACH ' || n.nspname || ' ' || i.relname || ' ' FROM pg_constraint k JOIN pg_class i ON i.oid = k.conindid JOIN pg_namespace n ON n.oid = i.relnamespace WHERE k.oid = o.objid AND k.contype IN ('p', 'u', 'x'))
  END,
  pg_describe_object(o.classid, o.objid, 0)
FROM objs o
)sql",
                                {pg::text_array(names)});
    source.exec("RESET jit");
    std::vector<Needed> out;
    for (int i = 0; i < r.rows(); ++i) {
        if (r.is_null(i, 3))
            continue; // a kind of object pg_dump does not emit on its own (or from an extension)
        out.push_back({r.str(i, 1), r.str(i, 2), r.str(i, 3), r.str(i, 4), r.str(i, 5)});
    }
    return out;
}

/// Which of `needed` the target lacks: every probe in one query (a few hundred per statement).
std::vector<const Needed*> lacking(pg::Connection& target, const std::vector<Needed>& needed)
{
    constexpr std::size_t k_probes_per_query = 500;
    std::vector<const Needed*> out;
    for (std::size_t from = 0; from < needed.size(); from += k_probes_per_query) {
        const auto to = std::min(needed.size(), from + k_probes_per_query);
        std::string sql = "SELECT ";
        for (auto i = from; i < to; ++i)
            sql += (i > from ? ", " : "") + needed[i].probe;
        auto r = target.exec(sql);
        for (auto i = from; i < to; ++i)
            if (r.get(0, static_cast<int>(i - from)) != "t")
                out.push_back(&needed[i]);
    }
    return out;
}

/// The error for a tool that failed: its exit code and what it wrote to `dir`/err.
[[noreturn]] void tool_failed(const fs::path& dir, const std::string& step, int rc)
{
    throw SourceError(step + " failed (exit " + std::to_string(rc) + "): " + read_file(dir / "err"), false);
}

} // namespace

/// The source's schema as `pg_dump --schema-only --format=custom` wrote it, with pg_restore's
/// table of contents of it.
struct SchemaCopy::Dump {
    WorkDir dir;
    std::string restore_bin;
    fs::path file;
    std::string toc;
};

namespace {

/// pg_dump --schema-only of the source, and pg_restore --list of that dump. The password goes
/// to the tools through the environment, never on their command line; pg::k_no_timeouts in the
/// conninfo, as for every pgshift session.
std::unique_ptr<SchemaCopy::Dump> dump_schema(const std::string& source_conninfo, int server_version)
{
    auto dump = std::make_unique<SchemaCopy::Dump>();
    const auto dump_bin = find_pg_dump(server_version / 10000, version_text(server_version));
    dump->restore_bin = (fs::path(dump_bin).parent_path() / "pg_restore").string();
    std::string password;
    std::string conninfo;
    for (auto& [k, v] : pg::parse_conninfo(pg::conninfo_with(source_conninfo, {{"options", pg::k_no_timeouts}}))) {
        if (k == "password")
            password = v;
        else
            conninfo += (conninfo.empty() ? "" : " ") + k + "=" + conninfo_quote(v);
    }
    dump->file = dump->dir.path() / "schema.dump";
    const auto dir = dump->dir.path();
    if (int rc = run_tool({dump_bin, "--schema-only", "--format=custom", "--no-owner", "--no-privileges", "--file",
                           dump->file.string(), "--dbname", conninfo},
                          dir / "out", dir / "err", password);
        rc != 0)
        tool_failed(dir, dump_bin + " --schema-only", rc);
    if (int rc = run_tool({dump->restore_bin, "--list", dump->file.string()}, dir / "toc", dir / "err", ""); rc != 0)
        tool_failed(dir, dump->restore_bin + " --list", rc);
    dump->toc = read_file(dir / "toc");
    return dump;
}

} // namespace

SchemaCopy::SchemaCopy(const config::Config& cfg) : cfg_(cfg) {}
SchemaCopy::~SchemaCopy() = default;

int SchemaCopy::restore_section(pg::Connection& source, pg::Connection& target,
                                const std::vector<reader::SourceTable>& tables, const std::string& section)
{
    auto needed = needed_objects(source, tables);
    std::set<std::pair<std::string, std::string>> want;
    std::vector<std::string> want_names;
    for (const auto* n : lacking(target, needed)) {
        want.insert({n->classid, n->objid});
        if (!n->toc_name.empty())
            want_names.push_back(n->toc_name);
    }
    if (want.empty())
        return 0;

    if (!dump_)
        dump_ = dump_schema(cfg_.source.conninfo, source.server_version());
    const auto& dir = dump_->dir;
    const auto& restore_bin = dump_->restore_bin;
    const auto& dump = dump_->file;
    // Keep the table-of-contents lines of the wanted objects: "id; classid objid DESC ...".
    std::istringstream toc(dump_->toc);
    std::string list;
    int entries = 0;
    for (std::string l; std::getline(toc, l);) {
        if (l.empty() || l[0] == ';')
            continue;
        auto semi = l.find("; ");
        if (semi == std::string::npos)
            continue;
        std::istringstream fields(l.substr(semi + 2));
        std::string classid, objid;
        fields >> classid >> objid;
        std::string rest;
        std::getline(fields, rest);
        if (!rest.empty() && rest[0] == ' ')
            rest.erase(0, 1);
        bool keep = false;
        if (objid != "0")
            keep = want.count({classid, objid}) > 0;
        else
            keep = std::any_of(want_names.begin(), want_names.end(),
                               [&](const std::string& n) { return rest.rfind(n, 0) == 0; });
        if (keep) {
            list += l + "\n";
            ++entries;
        }
    }
    {
        std::ofstream out(dir.path() / "list");
        out << list;
    }
    if (int rc = run_tool({restore_bin, "--section=" + section, "--no-owner", "--no-privileges", "--use-list",
                           (dir.path() / "list").string(), "--file", "-", dump.string()},
                          dir.path() / "sql", dir.path() / "err", "");
        rc != 0)
        tool_failed(dir.path(), restore_bin, rc);
    // psql meta-commands (\restrict, newer releases) are for psql; the rest is plain SQL.
    std::istringstream sql_in(read_file(dir.path() / "sql"));
    std::string sql;
    for (std::string l; std::getline(sql_in, l);)
        if (l.empty() || l[0] != '\\')
            sql += l + "\n";
    try {
        target.exec("BEGIN");
        target.exec(sql);
        // pg_dump's script empties search_path for its session; restore ours.
        target.exec("COMMIT");
        target.exec("RESET search_path");
    } catch (const pg::PgError& e) {
        if (target.is_ok()) {
            target.exec("ROLLBACK");
            target.exec("RESET search_path");
        }
        throw TargetError("schema: copy: creating the " + section + " objects on the target failed (nothing of this "
                          "step was kept): " + e.what(),
                          e.retryable());
    }
    return entries;
}

std::vector<std::string> check_schema(const config::Config& cfg, pg::Connection& source, pg::Connection& target,
                                      const std::vector<reader::SourceTable>& tables)
{
    std::vector<std::string> out;
    bool any_missing = false;
    for (const auto& d : check::compare_schemas(source, target, tables)) {
        if (d.kind == check::DifferenceKind::missing_table && cfg.schema == config::SchemaMode::copy) {
            any_missing = true; // created before the copy
            continue;
        }
        if (d.kind == check::DifferenceKind::missing_column && cfg.schema == config::SchemaMode::copy)
            continue; // added before the copy (before_data)
        out.push_back(d.message);
    }
    if (any_missing) {
        try {
            (void)find_pg_dump(source.server_version() / 10000, version_text(source.server_version()));
        } catch (const ConfigError& e) {
            out.emplace_back(e.what());
        }
    }
    return out;
}

void SchemaCopy::before_data(pg::Connection& source, pg::Connection& target,
                             const std::vector<reader::SourceTable>& tables)
{
    if (cfg_.schema != config::SchemaMode::copy)
        return;
    add_missing_columns(source, target, tables);
    auto missing = missing_tables(target, tables);
    if (missing.empty())
        return;
    std::string names;
    for (const auto& t : missing)
        names += (names.empty() ? "" : ", ") + t.display();
    int n = restore_section(source, target, missing, "pre-data");
    spdlog::info("schema: copy: created {} object(s) on the target for {} missing table(s): {}", n, missing.size(),
                 names);
    // What was created must now match, or apply would fail later: say it now.
    std::string problems;
    for (const auto& d : check::compare_schemas(source, target, tables))
        problems += "\n  " + d.message;
    if (!problems.empty())
        throw TargetError("schema: copy: the tables created on the target still differ from the source:" + problems,
                          false);
}

void SchemaCopy::add_missing_columns(pg::Connection& source, pg::Connection& target,
                                     const std::vector<reader::SourceTable>& tables)
{
    // Target tables that exist but lack some of the source's columns (made from an older dump):
    // the columns are added as the source defines them (apply/columns.hpp), each table in one
    // transaction. They are empty here (the copy fills only empty tables), so nothing is refused
    // for the rows they hold.
    std::map<std::string, std::vector<apply::NewColumn>> by_table;
    for (const auto& d : check::compare_schemas(source, target, tables))
        if (d.kind == check::DifferenceKind::missing_column)
            by_table[d.table].push_back({d.column, 0});
    for (const auto& t : tables)
        if (auto it = by_table.find(t.display()); it != by_table.end())
            apply::add_columns(source, target, t.schema, t.name, it->second, false);
}

void SchemaCopy::after_data(pg::Connection& source, pg::Connection& target,
                            const std::vector<reader::SourceTable>& tables)
{
    if (cfg_.schema != config::SchemaMode::copy)
        return;
    auto started = std::chrono::steady_clock::now();
    int n = restore_section(source, target, tables, "post-data");
    dump_.reset(); // the last step that needs it: its temporary directory goes now
    if (n > 0)
        spdlog::info("schema: copy: created {} index(es), constraint(s) and trigger(s) on the target in {:.1f} s", n,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

} // namespace pgshift::copy
