// Integration: the initial copy. Rows already on the source reach an empty target under one
// snapshot in N parallel sessions while the application keeps writing, and streaming takes over
// without gap or overlap; a kill -9 in the middle of the copy is followed by a clean restart
// from a new slot with no duplicate row; schema: copy creates the type-coverage schema, and a
// table of an extension's type (PostGIS geometry with a GiST index), on an empty target;
// schema: verify names every difference and creates nothing.
//
// Design notes: the write load runs from before the daemon starts until after the copy ended,
// and stamps every row it writes with clock_timestamp(), so the test can show (from the target's
// pgshift.copy_runs) that rows were committed on the source while the copy ran. Tables without a
// key (REPLICA IDENTITY FULL) make a duplicate visible as an extra row rather than a key error.
#include "harness/load_threads.hpp"
#include "harness/replication_fixture.hpp"
#include "harness/type_schema.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

const char* const k_schema = R"sql(
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text, touched timestamptz);
CREATE TABLE big (id int PRIMARY KEY, grp int NOT NULL, pad text, touched timestamptz);
CREATE TABLE ledger (client int NOT NULL, seq int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE parted (id int, day date NOT NULL, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM ('2030-01-01') TO ('2040-01-01');
CREATE TABLE empty_one (id int PRIMARY KEY);
)sql";

const std::vector<std::string> k_tables = {"public.accounts", "public.big", "public.ledger", "public.parted",
                                           "public.empty_one"};

/// Rows already on the source before pgshift starts: `big_rows` rows of about 250 bytes in
/// `big` (about 40 MiB per 150,000), so that it is split into several page ranges.
void load_rows(TestCluster& src, int big_rows)
{
    src.exec("INSERT INTO accounts SELECT g, 1000, 'acct ' || g FROM generate_series(1, 2000) g");
    src.exec("INSERT INTO big SELECT g, g % 97, repeat(md5(g::text), 7) FROM generate_series(1, " +
             std::to_string(big_rows) + ") g");
    src.exec("INSERT INTO ledger (client, seq) SELECT 100 + g % 7, g FROM generate_series(1, 30000) g");
    src.exec("INSERT INTO parted SELECT g, date '2020-01-01' + (g * 13) % 7000, 'p' || g FROM "
             "generate_series(1, 20000) g");
    src.exec("ANALYZE");
}

/// Writer threads: each commit inserts a ledger row, moves money between accounts, updates and
/// deletes/re-inserts a row of `big`, updates a row of `parted` and inserts one into it (its
/// partition parted_b); until stopped.
class Load {
public:
    Load(std::string conninfo, int threads)
        : conninfo_(std::move(conninfo)), threads_(threads, [this](int k, const auto& stop) { run(k, stop); })
    {
    }
    void stop() { threads_.stop(); }
    [[nodiscard]] int committed() const { return committed_; }
    [[nodiscard]] std::string errors() const { return threads_.errors(); }

private:
    void run(int client, const std::atomic<bool>& stop)
    {
        {
            pgshift::pg::Connection c(conninfo_);
            std::mt19937 rng(static_cast<unsigned>(client * 31 + 7));
            int seq = 0;
            while (!stop) {
                auto r = [&](int lo, int hi) { return std::to_string(std::uniform_int_distribution<int>(lo, hi)(rng)); };
                try {
                    c.exec("BEGIN");
                    c.exec_params("INSERT INTO ledger (client, seq) VALUES ($1, $2)",
                                  {std::to_string(client), std::to_string(seq + 1)});
                    auto a = r(1, 2000), b = r(1, 2000), amount = r(1, 50);
                    c.exec_params("UPDATE accounts SET balance = balance - $2, touched = clock_timestamp() WHERE id = $1",
                                  {a, amount});
                    c.exec_params("UPDATE accounts SET balance = balance + $2, touched = clock_timestamp() WHERE id = $1",
                                  {b, amount});
                    c.exec_params("UPDATE big SET pad = md5(random()::text), touched = clock_timestamp() WHERE id = $1",
                                  {r(1, 20000)});
                    // Disjoint per writer (at most 4): two writers re-inserting one id would collide.
                    auto victim = std::to_string(4 * std::uniform_int_distribution<int>(0, 4999)(rng) + client + 1);
                    c.exec_params("DELETE FROM big WHERE id = $1", {victim});
                    c.exec_params("INSERT INTO big VALUES ($1, 0, 'reborn', clock_timestamp())", {victim});
                    c.exec_params("UPDATE parted SET v = 'w' || $2 WHERE id = $1", {r(1, 20000), std::to_string(client)});
                    c.exec_params("INSERT INTO parted VALUES ($1, '2035-01-01', 'new')",
                                  {std::to_string(1000000 * (client + 1) + seq)});
                    c.exec("COMMIT");
                    ++seq;
                    ++committed_;
                } catch (const pgshift::pg::PgError& e) {
                    if (e.sqlstate() != "40P01" && e.sqlstate() != "40001")
                        throw;
                    c.exec("ROLLBACK");
                }
                std::this_thread::sleep_for(2ms);
            }
        }
    }

    std::string conninfo_;
    std::atomic<int> committed_{0};
    LoadThreads threads_; // last: its threads stop before the members they use go
};

std::string read_all(const std::filesystem::path& p)
{
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Lines of the daemon's log at level error.
std::vector<std::string> error_lines(const std::string& log)
{
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string l; std::getline(in, l);)
        if (l.find(" error ") != std::string::npos)
            out.push_back(l);
    return out;
}

/// Distinct copy sessions k that copied at least one unit ("copy session k: ..." debug lines).
std::set<std::string> copy_sessions_that_copied(const std::string& log)
{
    std::set<std::string> out;
    std::regex re("copy session ([0-9]+): ");
    for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it)
        out.insert((*it)[1]);
    return out;
}

/// Polls until the target's pgshift.copy_runs says `done` (true) or the timeout/daemon exit.
bool wait_copy_done(ReplicationFixture& fx, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!fx.daemon().running())
            return false;
        try {
            auto t = fx.target().connect();
            auto r = t.exec("SELECT state FROM pgshift.copy_runs");
            if (r.rows() == 1 && r.get(0, 0) == "done")
                return true;
        } catch (const std::exception&) {
        }
        std::this_thread::sleep_for(200ms);
    }
    return false;
}

/// `split_tables` "always" splits `big` into page ranges; the default (auto) copies each table
/// whole on this PostgreSQL 15 target, loaded frozen.
FixtureOptions copy_options(const std::string& name, int copy_workers, const std::string& split_tables = "")
{
    FixtureOptions o;
    o.schema_sql = k_schema;
    o.daemon.name = name;
    o.daemon.initial_copy = true;
    o.daemon.copy_workers = copy_workers;
    o.daemon.split_tables = split_tables;
    o.daemon.workers = 2;
    return o;
}

} // namespace

TEST_CASE("initial copy: existing rows and a concurrent write load end identical, copied by N sessions",
          "[integration][initial_copy]")
{
    constexpr int sessions = 3;
    ReplicationFixture fx(copy_options("copyload", sessions, "always"));
    load_rows(fx.source(), 150000);
    Load load(fx.source().conninfo(), 3);
    std::this_thread::sleep_for(500ms); // the load is running before the slot exists
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 90s));
    std::this_thread::sleep_for(1s); // and keeps running while streaming took over
    load.stop();
    REQUIRE(load.errors().empty());
    REQUIRE(load.committed() > 0);

    REQUIRE(fx.converged(k_tables, 60s));
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    for (const auto& table : k_tables) {
        INFO("table " << table);
        CHECK(table_digest(s, table) == table_digest(t, table));
    }
    // The load committed on the source while the copy ran (between the slot's creation and
    // the copy's end, as the target recorded them), so streaming had to carry those rows.
    auto window = t.exec("SELECT started_at, finished_at, attempts FROM pgshift.copy_runs");
    REQUIRE(window.rows() == 1);
    CHECK(window.get(0, 2) == "1");
    auto during = s.exec_params("SELECT count(*) FROM ledger WHERE at > $1::timestamptz AND at < $2::timestamptz",
                                {window.str(0, 0), window.str(0, 1)});
    INFO("copy ran from " << window.str(0, 0) << " to " << window.str(0, 1));
    CHECK(std::stol(during.str(0, 0)) > 0);

    // N sessions really copied (big is split into several ranges), and status says so.
    auto log = read_all(fx.daemon().log_path());
    CHECK(copy_sessions_that_copied(log).size() == static_cast<std::size_t>(sessions));
    CHECK(log.find("initial copy: all 3 session(s) imported the snapshot") != std::string::npos);
    CHECK(std::regex_search(log, std::regex("initial copy: [0-9]+ table\\(s\\), ([4-9]|[1-9][0-9]+) unit\\(s\\)")));
    CHECK(fx.daemon().metric("pgshift_copy_tables{state=\"done\"}") == 5.0);
    CHECK(fx.daemon().metric("pgshift_copy_rows_total").value_or(0) >= 150000 + 30000 + 20000 + 2000);
    // No conflict, missing row or other error anywhere.
    INFO(join_lines(error_lines(log)));
    CHECK(error_lines(log).empty());
    CHECK(fx.daemon().running());
}

namespace {

/// Holds a SHARE lock on a target table in an open transaction: COPY into it waits (reads do
/// not), so a copy can be stopped deterministically while that table is the one left.
class TargetLock {
public:
    TargetLock(TestCluster& target, const std::string& table) : conn_(target.connect()), table_(table)
    {
        conn_.exec("BEGIN");
        conn_.exec("LOCK TABLE " + table + " IN SHARE MODE");
    }
    void release()
    {
        if (!released_)
            conn_.exec("ROLLBACK");
        released_ = true;
    }
    ~TargetLock()
    {
        try {
            release();
        } catch (...) {
        }
    }
    /// True once some session waits for the lock.
    [[nodiscard]] bool waited_on(TestCluster& target) const
    {
        return target.value("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '" + table_ +
                            "'::regclass") != "0";
    }

private:
    pgshift::pg::Connection conn_;
    std::string table_;
    bool released_ = false;
};

/// Waits until the copy runs (attempt `attempt`), `done` tables are done and a copy session
/// waits for `lock`.
bool wait_blocked(ReplicationFixture& fx, const TargetLock& lock, int attempt, int done)
{
    auto deadline = std::chrono::steady_clock::now() + 90s;
    while (std::chrono::steady_clock::now() < deadline && fx.daemon().running()) {
        try {
            auto r = fx.target().query("SELECT state, attempts, (SELECT count(*) FROM pgshift.copy_tables "
                                       "WHERE state = 'done') FROM pgshift.copy_runs");
            if (r.size() == 1 && r[0][0] == "copying" && r[0][1] == std::to_string(attempt) &&
                r[0][2] == std::to_string(done) && lock.waited_on(fx.target()))
                return true;
        } catch (const pgshift::pg::PgError&) {
            // the pgshift schema does not exist yet
        }
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

/// After the restart: the copy completes, every table matches under the load, no duplicates.
void require_identical_after_restart(ReplicationFixture& fx, Load& load)
{
    REQUIRE(wait_copy_done(fx, 90s));
    std::this_thread::sleep_for(1s);
    load.stop();
    REQUIRE(load.errors().empty());
    REQUIRE(fx.converged(k_tables, 60s));
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    for (const auto& table : k_tables) {
        INFO("table " << table);
        CHECK(table_digest(s, table) == table_digest(t, table));
    }
    CHECK(t.exec("SELECT count(*) - count(DISTINCT (client, seq)) FROM ledger").get(0, 0) == "0");
    CHECK(t.exec("SELECT count(*) - count(DISTINCT id) FROM big").get(0, 0) == "0");
    CHECK(t.exec("SELECT attempts FROM pgshift.copy_runs").get(0, 0) == "2");
    auto log = read_all(fx.daemon().log_path());
    INFO(join_lines(error_lines(log)));
    CHECK(fx.daemon().running());
}

} // namespace

TEST_CASE("initial copy: kill -9 before any table is done: the copy starts over from a new slot",
          "[integration][initial_copy][crash]")
{
    ReplicationFixture fx(copy_options("copykill", 2, "always")); // killed in big's ranges
    load_rows(fx.source(), 150000);
    Load load(fx.source().conninfo(), 2);
    TargetLock lock(fx.target(), "big"); // the largest table: every session starts with it
    fx.daemon().start();
    REQUIRE(wait_blocked(fx, lock, 1, 0));
    fx.daemon().kill(SIGKILL);
    lock.release();
    std::this_thread::sleep_for(1s); // the load goes on while pgshift is down
    fx.daemon().start();
    require_identical_after_restart(fx, load);
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("was interrupted before it finished; its snapshot is gone") != std::string::npos);
    CHECK(log.find("so the copy starts over from a new slot") != std::string::npos);
    CHECK(log.find("dropped replication slot pgshift_copykill of the interrupted copy") != std::string::npos);
}

TEST_CASE("initial copy: kill -9 with tables done: they are kept, the others are copied under a new snapshot",
          "[integration][initial_copy][crash]")
{
    ReplicationFixture fx(copy_options("copyresume", 2));
    load_rows(fx.source(), 400000);
    Load load(fx.source().conninfo(), 2);
    // parted_b (a partition of parted) is the one relation left: the other four tables finish.
    TargetLock lock(fx.target(), "parted_b");
    fx.daemon().start();
    REQUIRE(wait_blocked(fx, lock, 1, 4));
    const auto big_done_at = fx.target().value("SELECT finished_at FROM pgshift.copy_tables WHERE table_name = 'public.big'");
    // Copied whole (split_tables: auto on a PostgreSQL 15 target) and loaded frozen: every page
    // of big is all-frozen in the visibility map, with no VACUUM.
    fx.target().exec("CREATE EXTENSION IF NOT EXISTS pg_visibility");
    CHECK(fx.target().value("SELECT format('%s of %s', all_frozen, pg_relation_size('big') / 8192) "
                            "FROM pg_visibility_map_summary('big')") ==
          fx.target().value("SELECT format('%1$s of %1$s', pg_relation_size('big') / 8192)"));
    CHECK(std::stol(fx.target().value("SELECT pg_relation_size('big') / 8192")) > 1000);
    fx.daemon().kill(SIGKILL);
    lock.release();
    std::this_thread::sleep_for(1s); // the load goes on while pgshift is down, on every table
    fx.daemon().start();
    require_identical_after_restart(fx, load);
    // The finished tables were not copied again: only parted's rows were.
    CHECK(fx.target().value("SELECT finished_at FROM pgshift.copy_tables WHERE table_name = 'public.big'") ==
          big_done_at);
    CHECK(fx.daemon().metric("pgshift_copy_rows_total").value_or(1e9) < 30000);
    REQUIRE(fx.daemon().terminate(30s) == 0);
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("The 4 table(s) it finished are kept") != std::string::npos);
    // The first run: big, ledger, accounts and empty_one whole and frozen; parted is partitioned
    // (its partitions are loaded through it, which FREEZE refuses). Every column type is built in.
    CHECK(log.find("initial copy: 5 table(s), 6 unit(s)") != std::string::npos);
    CHECK(log.find("5 table(s) in binary format, 4 loaded frozen") != std::string::npos);
    CHECK(log.find("1 table(s) are copied under snapshot") != std::string::npos);
    // The changes parted received between the slot's consistent point and the new snapshot were
    // in its copy already, and were skipped.
    CHECK(std::regex_search(log, std::regex("[1-9][0-9]* change\\(s\\) of tables copied under a later snapshot were skipped")));
    INFO(join_lines(error_lines(log)));
    CHECK(error_lines(log).empty());
}

TEST_CASE("initial copy: SIGTERM while a COPY waits ends promptly and the next start completes the copy",
          "[integration][initial_copy]")
{
    ReplicationFixture fx(copy_options("copyterm", 2));
    load_rows(fx.source(), 100000);
    Load load(fx.source().conninfo(), 2);
    TargetLock lock(fx.target(), "parted_b");
    fx.daemon().start();
    REQUIRE(wait_blocked(fx, lock, 1, 4));
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(fx.daemon().terminate(30s) == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);
    lock.release();
    fx.daemon().start();
    require_identical_after_restart(fx, load);
}

namespace {

/// The type-coverage schema (harness/type_schema.hpp) plus a partitioned table with a partitioned
/// index, identity and serial columns, a check constraint, an expression index, a trigger function.
const std::string k_types_schema = std::string(k_type_schema) + R"sql(
CREATE TABLE t_serial (id serial PRIMARY KEY, v text CHECK (v <> ''));
CREATE TABLE t_identity (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text UNIQUE);
CREATE INDEX t_child_v ON t_child (lower(v));
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.v := NEW.v || '!'; RETURN NEW; END$$;
CREATE TRIGGER t_parent_touch BEFORE INSERT ON t_parent FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE parted (id int, day date NOT NULL, m mood, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE parted_2024 PARTITION OF parted FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE parted_2025 PARTITION OF parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX parted_m ON parted (m);
)sql";

const char* const k_types_rows = R"sql(
INSERT INTO t_numbers VALUES (1, 2147483647, 9223372036854775807, 32767, 'NaN', 12345678901234.123456, 'Infinity', 'NaN'),
  (2, -2147483648, -9223372036854775808, -32768, '-1234567890.123456789', -0.000001, '-0', 3.4e38);
INSERT INTO t_text VALUES (1, E'tab\there\nnewline \\ backslash', 'vc', 'abc', '\x00ff10'), (2, '', NULL, NULL, '');
INSERT INTO t_json VALUES (1, '{"a": [1, 2, {"b": null}]}', '{"k": "v", "n": 1.50}');
INSERT INTO t_arrays VALUES (1, '{"a b", "c,d", NULL, "\"q\""}', '{1,2,3}', '{{1,2},{3,4}}', '{1.5,NaN}',
  ARRAY['{"x":1}'::jsonb], '{2024-02-29}');
INSERT INTO t_time VALUES (1, '2024-02-29 12:34:56.789+05:30', '1999-12-31 23:59:59.999999', '0001-01-01 BC',
  '1 year 2 mons -3 days 04:05:06.7', '24:00:00', '12:00+14');
INSERT INTO t_misc VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', true, B'10101');
INSERT INTO t_user_types VALUES (1, 'very "happy"', 7, ROW('Main St, 1', 12345, '{a,"b c"}'),
  ARRAY[ROW('x', 1, '{}')::address, ROW(NULL, NULL, NULL)::address], '{sad,ok}');
INSERT INTO t_ranges VALUES (1, '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)', '(1.5,2.5]', 'empty',
  '{[1,3),[5,8)}');
INSERT INTO t_generated (id, a, b) VALUES (1, 2, 3), (2, NULL, 4);
INSERT INTO t_serial (v) SELECT 's' || g FROM generate_series(1, 50) g;
INSERT INTO t_identity (v) SELECT 'i' || g FROM generate_series(1, 50) g;
INSERT INTO t_parent SELECT g, 'p' || g FROM generate_series(1, 100) g;
INSERT INTO t_child SELECT g, 1 + g % 100, 'Child ' || g FROM generate_series(1, 300) g;
INSERT INTO t_full VALUES (1, '{"a":1}', '(1,2)', 'full'), (1, '{"a":1}', '(1,2)', 'full');
INSERT INTO "My Schema"."select" VALUES (1, 'from', 'user', 3, 'ünï');
INSERT INTO parted SELECT g, date '2024-01-01' + g % 700, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3]
  FROM generate_series(1, 3000) g;
)sql";

const std::vector<std::string> k_types_tables = {
    "public.t_numbers", "public.t_text",     "public.t_json",     "public.t_arrays",  "public.t_time",
    "public.t_misc",    "public.t_user_types", "public.t_ranges", "public.t_generated", "public.t_serial",
    "public.t_identity", "public.t_parent",  "public.t_child",    "public.t_full",    R"("My Schema"."select")",
    "public.parted",
};

/// schema: copy onto an empty target: `schema_sql` runs on the source only (on the target not
/// even its extensions exist), and the initial copy, in 2 sessions, creates it there.
FixtureOptions schema_copy_options(const std::string& name, const std::string& schema_sql)
{
    FixtureOptions o;
    o.schema_sql = schema_sql;
    o.schema_on_target = false;
    o.daemon.name = name;
    o.daemon.initial_copy = true;
    o.daemon.copy_workers = 2;
    o.daemon.schema = "copy";
    return o;
}

/// The daemon's log says schema: copy created objects on the target, and holds no error line.
void check_log_created_without_errors(ReplicationFixture& fx)
{
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("schema: copy: created") != std::string::npos);
    INFO(join_lines(error_lines(log)));
    CHECK(error_lines(log).empty());
}

} // namespace

TEST_CASE("initial copy: schema: copy creates the type-coverage schema on an empty target", "[integration][initial_copy]")
{
    ReplicationFixture fx(schema_copy_options("copyschema", k_types_schema));
    exec_statements(fx.source(), k_types_rows);
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    // Changes after the copy use the indexes and constraints created after the rows.
    fx.source().exec("UPDATE t_identity SET v = v || 'x' WHERE id <= 10; DELETE FROM t_child WHERE id > 250; "
                     "INSERT INTO parted VALUES (5000, '2025-06-01', 'ok'); UPDATE parted SET m = 'sad' WHERE id < 20;"
                     "INSERT INTO t_parent VALUES (1000, 'after')");
    REQUIRE(fx.converged(k_types_tables, 60s));
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    for (const auto& table : k_types_tables) {
        INFO("table " << table);
        CHECK(table_digest(s, table) == table_digest(t, table));
    }
    // The same definitions: columns and types, indexes (valid, partitioned ones attached),
    // constraints, triggers, sequences, types.
    auto same = [&](const std::string& what, const std::string& sql) {
        INFO(what << ": " << sql);
        CHECK(to_rows(s.exec(sql)) == to_rows(t.exec(sql)));
    };
    same("columns", "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, "
                    "a.attgenerated, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
                    "AND d.adnum = a.attnum WHERE n.nspname IN ('public', 'My Schema') AND c.relkind IN ('r', 'p') "
                    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2");
    same("indexes", "SELECT indexrelid::regclass::text, indisvalid, indisprimary, indisunique, "
                    "pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'My Schema') ORDER BY 1");
    same("constraints", "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE connamespace IN ('public'::regnamespace, '\"My Schema\"'::regnamespace) ORDER BY 1, 2");
    same("triggers", "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2");
    same("types", "SELECT typname, typtype FROM pg_type WHERE typnamespace = 'public'::regnamespace ORDER BY 1");
    same("partitions", "SELECT inhrelid::regclass::text, inhparent::regclass::text FROM pg_inherits ORDER BY 1");
    // The trigger exists but did not fire on copied or applied rows (session_replication_role).
    CHECK(t.exec("SELECT count(*) FROM t_parent WHERE v LIKE '%!!'").get(0, 0) == "0");
    check_log_created_without_errors(fx);
    auto log = read_all(fx.daemon().log_path());
    // Built-in types travelled in binary (and came out identical above); t_user_types (enum,
    // domain, composite) as text.
    std::smatch m;
    REQUIRE(std::regex_search(log, m, std::regex("initial copy: ([0-9]+) table\\(s\\), .* ([0-9]+) table\\(s\\) in binary format")));
    INFO(m[0]);
    CHECK(std::stoul(m[2].str()) > 0);
    CHECK(std::stoul(m[2].str()) < std::stoul(m[1].str()));
}

namespace {

/// PostGIS (Debian's postgresql-15-postgis-3, which scripts/install-deps.sh installs) on this machine.
const char* const k_postgis_control = "/usr/share/postgresql/15/extension/postgis.control";

/// A table of an extension's types: points with a typmod (type and SRID), polygons of mixed
/// SRIDs and NULLs in an unconstrained geometry column, a GiST index on the points.
const char* const k_postgis_schema = R"sql(
CREATE EXTENSION postgis;
CREATE TABLE places (id int PRIMARY KEY, name text NOT NULL, pt geometry(Point, 4326) NOT NULL, area geometry);
CREATE INDEX places_pt_gist ON places USING gist (pt);
INSERT INTO places SELECT g, 'place ' || g,
  ST_SetSRID(ST_MakePoint(-180 + (g * 7919 % 36000) / 100.0, -90 + (g * 104729 % 18000) / 100.0), 4326),
  CASE WHEN g % 10 = 0 THEN NULL
       WHEN g % 3 = 0 THEN ST_SetSRID(ST_Buffer(ST_MakePoint(g, -g), 1 + g % 5, 4), 3857)
       ELSE ST_MakeEnvelope(g, g, g + 1.5, g + 2.5) END
FROM generate_series(1, 5000) g;
ANALYZE places;
)sql";

/// Count and md5 of every row as its key and the EWKB (geometry and SRID, exact bytes) of both
/// geometry columns, ordered by key.
std::string places_digest(pgshift::pg::Connection& c)
{
    return c.exec("SELECT count(*) || ' ' || md5(coalesce(string_agg(id || ' ' || name || ' ' || "
                  "encode(ST_AsEWKB(pt), 'hex') || ' ' || coalesce(encode(ST_AsEWKB(area), 'hex'), '-'), "
                  "E'\\n' ORDER BY id), '')) FROM places")
        .str(0, 0);
}

} // namespace

TEST_CASE("initial copy: schema: copy creates an extension type's table (PostGIS geometry, GiST index) on an empty target",
          "[integration][initial_copy][postgis]")
{
    if (!std::filesystem::exists(k_postgis_control)) {
        WARN("skipped: PostGIS is not installed (no " << k_postgis_control
                                                      << "); scripts/install-deps.sh installs postgresql-15-postgis-3");
        SUCCEED();
        return;
    }
    ReplicationFixture fx(schema_copy_options("copypostgis", k_postgis_schema));
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    auto s = fx.source().connect();
    auto t = fx.target().connect();

    // The extension, the table with its typmods and the GiST index were created on the target.
    // The extension's own table (spatial_ref_sys) is not replicated: CREATE EXTENSION filled it.
    CHECK(t.exec("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'").get(0, 0) == "1");
    CHECK(fx.source().value("SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables "
                            "WHERE pubname = 'pgshift_copypostgis'") == "public.places");
    CHECK(table_digest(s, "public.spatial_ref_sys") == table_digest(t, "public.spatial_ref_sys"));
    auto same = [&](const std::string& sql) { CHECK(s.exec(sql).str(0, 0) == t.exec(sql).str(0, 0)); };
    same("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN "
         "' NOT NULL' ELSE '' END, ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'public.places'::regclass "
         "AND attnum > 0 AND NOT attisdropped");
    same("SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public' AND "
         "tablename = 'places'");
    CHECK(fx.target().value("SELECT coalesce((SELECT am.amname || CASE WHEN i.indisvalid THEN ' valid' ELSE ' invalid' END "
                            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
                            "WHERE i.indexrelid = to_regclass('public.places_pt_gist')), 'missing')") == "gist valid");
    // The copied rows, byte for byte.
    CHECK(places_digest(s) == places_digest(t));

    // Geometry values changed, inserted and deleted while streaming arrive identical.
    fx.source().exec(
        "UPDATE places SET pt = ST_SetSRID(ST_MakePoint(ST_X(pt) / 2, ST_Y(pt) / 3), 4326), "
        "area = ST_Translate(coalesce(area, ST_MakeEnvelope(0, 0, 1, 1)), 10, -10) WHERE id % 7 = 0;"
        "UPDATE places SET area = NULL WHERE id BETWEEN 100 AND 120;"
        "INSERT INTO places SELECT g, 'late ' || g, ST_SetSRID(ST_MakePoint(g / 1000.0, g / 2000.0), 4326), "
        "ST_SetSRID(ST_Buffer(ST_MakePoint(g, g), 2), 3857) FROM generate_series(5001, 5500) g;"
        "DELETE FROM places WHERE id % 97 = 0");
    REQUIRE(fx.converged({"public.places"}, 60s));
    CHECK(places_digest(s) == places_digest(t));
    CHECK(t.exec("SELECT count(*) FROM places WHERE name LIKE 'late %'").get(0, 0) == "495"); // 500 less 5 x 97
    // The GiST index answers a bounding-box query on the target as on the source.
    const std::string near = "SET enable_seqscan = off; "
                             "SELECT count(*) FROM places WHERE pt && ST_MakeEnvelope(-50, -30, 50, 30, 4326)";
    CHECK(s.exec(near).str(0, 0) == t.exec(near).str(0, 0));
    auto plan = to_rows(t.exec("EXPLAIN (COSTS OFF) " + near.substr(near.find("SELECT"))));
    std::string plan_text;
    for (const auto& row : plan)
        plan_text += row.at(0).value_or("") + "\n";
    INFO(plan_text);
    CHECK(plan_text.find("places_pt_gist") != std::string::npos);

    check_log_created_without_errors(fx);
    CHECK(fx.daemon().running());
}

TEST_CASE("initial copy: schema: verify names every difference and creates nothing and an old pg_dump is refused clearly",
          "[integration][initial_copy]")
{
    FixtureOptions o;
    o.schema_sql = "CREATE TABLE a (id int PRIMARY KEY, b text, c int); CREATE TABLE d (id int PRIMARY KEY);";
    o.schema_on_target = false;
    o.daemon.name = "copyverify";
    o.daemon.initial_copy = true;
    auto no_objects = [](ReplicationFixture& fx) {
        CHECK(fx.source().value("SELECT count(*) FROM pg_replication_slots") == "0");
        CHECK(fx.source().value("SELECT count(*) FROM pg_publication") == "0");
        CHECK(fx.target().value("SELECT count(*) FROM pg_replication_origin") == "0");
        CHECK(fx.target().value("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'") == "0");
    };

    SECTION("schema: verify")
    {
        o.daemon.schema = "verify";
        ReplicationFixture fx(o);
        fx.target().exec("CREATE TABLE a (id int PRIMARY KEY, c text)");
        fx.daemon().start();
        auto code = fx.daemon().wait_exit(30s);
        REQUIRE(code == 78);
        auto log = read_all(fx.daemon().log_path());
        INFO(log);
        CHECK(log.find("schema: verify: the target does not match the source (nothing was created or changed)") !=
              std::string::npos);
        CHECK(log.find("table public.a, column b (text) is missing on the target") != std::string::npos);
        CHECK(log.find("table public.a, column c is integer on the source but text on the target") !=
              std::string::npos);
        CHECK(log.find("table public.d does not exist on the target") != std::string::npos);
        no_objects(fx);
    }
    SECTION("schema: copy with a pg_dump older than the source")
    {
        o.daemon.schema = "copy";
        ReplicationFixture fx(o);
        auto fake = fx.work_dir() / "pg_dump";
        {
            std::ofstream out(fake);
            out << "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n";
        }
        std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
        ::setenv("PGSHIFT_PG_DUMP", fake.c_str(), 1);
        fx.daemon().start();
        auto code = fx.daemon().wait_exit(30s);
        ::unsetenv("PGSHIFT_PG_DUMP");
        REQUIRE(code == 78);
        auto log = read_all(fx.daemon().log_path());
        INFO(log);
        CHECK(log.find("schema: copy needs pg_dump of PostgreSQL 15 or newer (the source runs 15.") !=
              std::string::npos);
        CHECK(log.find("is \"pg_dump (PostgreSQL) 9.6.24\"") != std::string::npos);
        no_objects(fx);
    }
}

TEST_CASE("initial copy: a table created on the source while streaming is created on the target and replicates",
          "[integration][initial_copy]")
{
    FixtureOptions o;
    o.schema_sql = "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, 'a' FROM generate_series(1, 100) g;";
    o.schema_on_target = false;
    o.daemon.name = "copylate";
    o.daemon.initial_copy = true;
    o.daemon.schema = "copy";
    ReplicationFixture fx(o);
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    // Written before pgshift notices the table (it polls every 2 s), and after.
    exec_statements(fx.source(), R"sql(
CREATE TYPE late_kind AS ENUM ('x', 'y');
CREATE TABLE late (id int PRIMARY KEY, v text, k late_kind NOT NULL DEFAULT 'x');
CREATE INDEX late_v ON late (v);
INSERT INTO late (id, v) SELECT g, 'v' || g FROM generate_series(1, 1000) g;
)sql");
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline &&
           fx.target().value("SELECT to_regclass('public.late') IS NOT NULL") != "t")
        std::this_thread::sleep_for(100ms);
    fx.source().exec("UPDATE late SET v = 'changed', k = 'y' WHERE id <= 100; DELETE FROM late WHERE id > 900; "
                     "INSERT INTO late (id, v) VALUES (5000, 'after')");
    REQUIRE(fx.converged({"public.a", "public.late"}, 60s));
    CHECK(fx.target().value("SELECT count(*) FROM pg_indexes WHERE tablename = 'late'") == "2");
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("table public.late appeared on the source: created it on the target (schema: copy)") !=
          std::string::npos);
    INFO(join_lines(error_lines(log)));
    CHECK(error_lines(log).empty());
}

namespace {

/// Polls the daemon's log until it contains `text` (true) or the timeout passes.
bool wait_for_log(ReplicationFixture& fx, const std::string& text, std::chrono::milliseconds timeout)
{
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_all(fx.daemon().log_path()).find(text) == std::string::npos) {
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(100ms);
    }
    return true;
}

/// Each column of `table` as `name type not-null default`, in order.
std::string column_definitions(TestCluster& c, const std::string& table)
{
    return c.value("SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || "
                   "a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), ', ' ORDER BY a.attnum) "
                   "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                   "WHERE a.attrelid = '" + table + "'::regclass AND a.attnum > 0 AND NOT a.attisdropped");
}

} // namespace

TEST_CASE("initial copy: columns added on the source while streaming are added on the target (schema: copy)",
          "[integration][initial_copy]")
{
    auto o = copy_options("addcol", 0);
    o.schema_sql = "CREATE TABLE grows (id int PRIMARY KEY, v text); "
                   "INSERT INTO grows SELECT g, 'v' || g FROM generate_series(1, 100) g; "
                   "CREATE TABLE rewritten (id int PRIMARY KEY); INSERT INTO rewritten SELECT generate_series(1, 10); "
                   "CREATE TABLE older (id int PRIMARY KEY, label text NOT NULL DEFAULT 'x', qty numeric(8,2)); "
                   "INSERT INTO older SELECT g, 'l' || g, g FROM generate_series(1, 20) g;";
    o.schema_on_target = false;
    o.daemon.schema = "copy";
    ReplicationFixture fx(o);
    // A target table made from an older definition: its missing columns are added before the copy.
    fx.target().exec("CREATE TABLE older (id int PRIMARY KEY)");
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    CHECK(column_definitions(fx.source(), "older") == column_definitions(fx.target(), "older"));
    {
        auto s = fx.source().connect();
        auto t = fx.target().connect();
        CHECK(table_digest(s, "public.older") == table_digest(t, "public.older"));
    }
    // Columns without a default, with a constant default and NOT NULL (the 100 rows read 7), with
    // a stable default (evaluated once by the ALTER: the rows keep that instant), with a default
    // changed afterwards; rows changed after them; and in one transaction a row inserted before
    // an ALTER and one after it.
    exec_statements(fx.source(), R"sql(
ALTER TABLE grows ADD COLUMN note text;
ALTER TABLE grows ADD COLUMN n int NOT NULL DEFAULT 7;
ALTER TABLE grows ADD COLUMN at timestamptz DEFAULT now();
ALTER TABLE grows ADD COLUMN k int DEFAULT 1;
ALTER TABLE grows ALTER COLUMN k SET DEFAULT 2;
INSERT INTO grows (id, v) VALUES (101, 'after');
UPDATE grows SET note = 'noted', n = n + 1 WHERE id <= 10;
BEGIN;
INSERT INTO grows (id, v) VALUES (102, 'before, same transaction');
ALTER TABLE grows ADD COLUMN "Late" numeric(6,2) DEFAULT 1.5;
INSERT INTO grows (id, v, "Late") VALUES (103, 'after, same transaction', 2.25);
COMMIT;
)sql");
    REQUIRE(fx.converged({"public.grows"}, 60s));
    CHECK(column_definitions(fx.source(), "grows") == column_definitions(fx.target(), "grows"));
    CHECK(fx.target().value("SELECT count(*) FROM grows WHERE n = 7 AND k = 1 AND at IS NOT NULL AND \"Late\" = 1.5") ==
          "90");
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("column n (integer) of source table public.grows was missing on the target: added it (schema: copy)") !=
          std::string::npos);
    CHECK(log.find("column Late (numeric(6,2)) of source table public.grows was missing") != std::string::npos);
    CHECK(log.find("column label (text) of source table public.older was missing") != std::string::npos);
    INFO(join_lines(error_lines(log)));
    CHECK(error_lines(log).empty());

    // A SIGTERM while the ALTER waits for a lock on the target table ends pgshift promptly (the
    // ALTER is cancelled), and the next start adds the column and applies the row.
    {
        auto locker = fx.target().connect();
        locker.exec("BEGIN");
        locker.exec("LOCK TABLE grows IN ACCESS SHARE MODE");
        fx.source().exec("ALTER TABLE grows ADD COLUMN extra int");
        fx.source().exec("INSERT INTO grows (id, v, extra) VALUES (104, 'locked', 4)");
        const auto waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                             "AND query LIKE 'ALTER TABLE %grows% ADD COLUMN%'";
        auto until = std::chrono::steady_clock::now() + 30s;
        while (std::chrono::steady_clock::now() < until && fx.target().value(waiting) != "1")
            std::this_thread::sleep_for(50ms);
        REQUIRE(fx.target().value(waiting) == "1");
        fx.daemon().kill(SIGTERM);
        auto code = fx.daemon().wait_exit(20s);
        REQUIRE(code);
        CHECK(*code == 0);
        locker.exec("ROLLBACK");
    }
    fx.daemon().start();
    REQUIRE(fx.converged({"public.grows"}, 60s));
    CHECK(column_definitions(fx.source(), "grows") == column_definitions(fx.target(), "grows"));

    // A volatile default made the source rewrite the table: the values its 10 rows got are in no
    // change, so the column is refused, clearly, and nothing of the transaction is applied.
    fx.source().exec("ALTER TABLE rewritten ADD COLUMN u uuid DEFAULT gen_random_uuid()");
    fx.source().exec("INSERT INTO rewritten VALUES (11)");
    const std::string refusal = "column \"u\" of source table public.rewritten does not exist on the target table, "
                                "and pgshift cannot add it (schema: copy): it was added with a default PostgreSQL "
                                "computed for each existing row";
    CHECK(wait_for_log(fx, refusal, 30s));
    CHECK(fx.daemon().running());
    CHECK(fx.target().value("SELECT count(*) FROM rewritten") == "10");
    CHECK(fx.target().value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'rewritten'::regclass AND attname = 'u'") ==
          "0");
}

TEST_CASE("initial copy: an added column's value for existing rows survives the source's DateStyle",
          "[integration][initial_copy]")
{
    auto o = copy_options("datestyle", 0);
    o.schema_sql = "CREATE TABLE dated (id int PRIMARY KEY); INSERT INTO dated SELECT generate_series(1, 3);";
    o.schema_on_target = false;
    o.daemon.schema = "copy";
    ReplicationFixture fx(o);
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    // pgshift reads the column's definition over a new source session, which takes the database's
    // DateStyle: "SQL, DMY" prints 2 January as 02/01/2026, which a target reads as 1 February.
    fx.source().exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET datestyle = ''SQL, DMY''', "
                     "current_database()); END $$");
    fx.source().exec("ALTER TABLE dated ADD COLUMN d date DEFAULT '2026-01-02'");
    fx.source().exec("INSERT INTO dated VALUES (4, '2026-03-04')");
    const auto rows = "SELECT string_agg(id || ':' || to_char(d, 'YYYY-MM-DD'), ',' ORDER BY id) FROM dated";
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline && fx.target().value("SELECT count(*) FROM dated") != "4")
        std::this_thread::sleep_for(100ms);
    CHECK(fx.source().value(rows) == "1:2026-01-02,2:2026-01-02,3:2026-01-02,4:2026-03-04");
    CHECK(fx.target().value(rows) == fx.source().value(rows));
}

TEST_CASE("initial copy: a column renamed on the source is renamed on the target, never taken for a new one, a dropped one stays",
          "[integration][initial_copy]")
{
    auto o = copy_options("renamed", 0);
    o.schema_sql = "CREATE TABLE named (id int PRIMARY KEY, note text, code int NOT NULL); "
                   "INSERT INTO named SELECT g, 'n' || g, g FROM generate_series(1, 10) g;";
    o.schema_on_target = false;
    o.daemon.schema = "copy";
    ReplicationFixture fx(o);
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    // Recorded by attnum: a rename is followed, with every row's value.
    fx.source().exec("ALTER TABLE named RENAME COLUMN note TO memo");
    fx.source().exec("INSERT INTO named VALUES (11, 'after the rename', 11); UPDATE named SET memo = 'kept' WHERE id = 2");
    REQUIRE(fx.converged({"public.named"}, 60s));
    CHECK(wait_for_log(fx, "column note of public.named was renamed to memo on the source (the same column): renamed "
                           "on the target too (schema: copy)", 10s));
    CHECK(fx.target().value("SELECT string_agg(memo, ',' ORDER BY id) FROM named WHERE id <= 3") == "n1,kept,n3");
    // Without a record of the table's columns (one recorded before this existed), adding
    // "remark" would leave the rows' values behind in "memo" on the target: refused.
    REQUIRE(fx.daemon().terminate() == 0);
    fx.target().exec("DELETE FROM pgshift.column_names");
    fx.source().exec("ALTER TABLE named RENAME COLUMN memo TO remark");
    fx.daemon().start();
    fx.source().exec("INSERT INTO named VALUES (12, 'after the second rename', 12)");
    const std::string refusal = "column \"remark\" of source table public.named does not exist on the target table, "
                                "and pgshift cannot add it (schema: copy): the target table also has column(s) memo";
    CHECK(wait_for_log(fx, refusal, 30s));
    CHECK(fx.target().value("SELECT count(*) FROM named") == "11");
    // Renamed on the target as the message says, then resumed: identical.
    fx.target().exec("ALTER TABLE named RENAME COLUMN memo TO remark");
    auto r = run_command({pgshift_binary().string(), "resume", "--config", fx.daemon().config_path().string()});
    CHECK(r.exit_code == 0);
    REQUIRE(fx.converged({"public.named"}, 60s));
    // A type widened on the source (ids about to run out): widened on the target too, so that an
    // id past integer's range applies. One the target cannot follow exactly (integer to text)
    // is still applied, and the log says what to change on the target before a value no longer fits.
    fx.source().exec("ALTER TABLE named ALTER COLUMN id TYPE bigint");
    fx.source().exec("ALTER TABLE named ALTER COLUMN code TYPE text");
    fx.source().exec("INSERT INTO named VALUES (13, 'after the type change', '13'), (3000000000, 'past integer', '14')");
    REQUIRE(fx.converged({"public.named"}, 60s));
    CHECK(fx.target().value("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'named'::regclass AND attname = 'id'") == "bigint");
    CHECK(fx.target().value("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'named'::regclass AND attname = 'code'") == "integer");
    auto log = read_all(fx.daemon().log_path());
    CHECK(log.find("column id of public.named is integer on the target and bigint on the source (widened there): "
                   "changing it on the target") != std::string::npos);
    CHECK(log.find("column code of public.named is text in the source's stream but integer on the target (its type "
                   "changed on the source?): values apply as text until one does not fit; change it on the target: "
                   "ALTER TABLE \"public\".\"named\" ALTER COLUMN \"code\" TYPE text") != std::string::npos);
    // A NOT NULL column (no default) dropped on the source: it stays on the target with its
    // values, and is made nullable there so that the rows written from now on apply.
    fx.source().exec("ALTER TABLE named DROP COLUMN code");
    fx.source().exec("INSERT INTO named VALUES (15, 'after the drop'); UPDATE named SET remark = 'updated' WHERE id = 1");
    CHECK(wait_for_log(fx, "column code of target table public.named is NOT NULL without a default, and the source's "
                           "table no longer has it (dropped there?): made it nullable on the target", 30s));
    for (int i = 0; i < 300 && fx.target().value("SELECT count(*) FROM named WHERE id = 15") == "0"; ++i)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().value("SELECT count(*) FROM named WHERE id = 15 AND code IS NULL") == "1");
    CHECK(fx.target().value("SELECT count(*) FROM named WHERE code = id") == "13");
    CHECK(fx.target().value("SELECT remark FROM named WHERE id = 1") == "updated");
    // A column dropped and another added in one statement: the records show the dropped one's
    // attnum gone, so the new one is no rename: added, and the dropped one stays with its values.
    fx.source().exec("ALTER TABLE named DROP COLUMN remark, ADD COLUMN label text");
    fx.source().exec("INSERT INTO named VALUES (16, 'labelled')");
    for (int i = 0; i < 300 && fx.target().value("SELECT count(*) FROM named WHERE id = 16") == "0"; ++i)
        std::this_thread::sleep_for(100ms);
    CHECK(fx.target().value("SELECT label FROM named WHERE id = 16") == "labelled");
    CHECK(fx.target().value("SELECT remark FROM named WHERE id = 1") == "updated");
    log = read_all(fx.daemon().log_path());
    CHECK(log.find("column label (text) of source table public.named was missing on the target: added it") !=
          std::string::npos);
}

TEST_CASE("initial copy: tables renamed on the source are renamed on the target, also a swap and while stopped",
          "[integration][initial_copy]")
{
    auto o = copy_options("renamed", 0);
    o.schema_sql = "CREATE TABLE named (id int PRIMARY KEY, note text); "
                   "CREATE TABLE other (id int PRIMARY KEY, note text); "
                   "INSERT INTO named SELECT g, 'named ' || g FROM generate_series(1, 10) g; "
                   "INSERT INTO other SELECT g, 'other ' || g FROM generate_series(1, 10) g;";
    o.schema_on_target = false;
    o.daemon.schema = "copy";
    ReplicationFixture fx(o);
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    // A deploy renames a table, then writes it (an old row and a new one).
    fx.source().exec("ALTER TABLE named RENAME TO renamed_t");
    fx.source().exec("INSERT INTO renamed_t VALUES (11, 'after the rename'); "
                     "UPDATE renamed_t SET note = 'updated' WHERE id = 1");
    REQUIRE(fx.converged({"public.renamed_t", "public.other"}, 60s));
    CHECK(fx.target().value("SELECT to_regclass('named') IS NULL") == "t");
    CHECK(wait_for_log(fx, "table public.named was renamed to public.renamed_t on the source: renamed on the target "
                           "too (schema: copy)", 10s));

    // Renamed while pgshift is stopped, and written: the stream resumes before the rename, so
    // the old name's record (kept on the target) is what tells.
    REQUIRE(fx.daemon().terminate() == 0);
    fx.source().exec("ALTER TABLE other RENAME TO \"Other Things\"");
    fx.source().exec("UPDATE \"Other Things\" SET note = 'while stopped' WHERE id = 2");
    fx.daemon().start();
    REQUIRE(fx.converged({"public.renamed_t", "public.\"Other Things\""}, 60s));

    // A swap of two tables' names, as online schema-change tools do, with both written after it:
    // each table's changes must land in the table that holds its rows.
    fx.source().exec("BEGIN; ALTER TABLE renamed_t RENAME TO swap_tmp; ALTER TABLE \"Other Things\" RENAME TO renamed_t; "
                     "ALTER TABLE swap_tmp RENAME TO \"Other Things\"; COMMIT");
    fx.source().exec("UPDATE renamed_t SET note = 'swapped, was other' WHERE id = 3; "
                     "UPDATE \"Other Things\" SET note = 'swapped, was named' WHERE id = 3; "
                     "INSERT INTO renamed_t VALUES (20, 'new in renamed_t'); "
                     "INSERT INTO \"Other Things\" VALUES (21, 'new in Other Things')");
    REQUIRE(fx.converged({"public.renamed_t", "public.\"Other Things\""}, 60s));
    CHECK(fx.target().value("SELECT note FROM renamed_t WHERE id = 4") == "other 4");
    CHECK(fx.target().value("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgshift_moved%'") == "0");
    const auto log = read_all(fx.daemon().log_path());
    INFO(log);
    CHECK(log.find("belongs to another source relation (renamed too): moved aside as public.pgshift_moved_") !=
          std::string::npos);
    CHECK(log.find("error") == std::string::npos);

    // Renamed and not written: listed (a cutover would find no table of that name on the new
    // primary), until its next change renames it.
    fx.source().exec("ALTER TABLE renamed_t RENAME TO quiet_t");
    CHECK(wait_for_log(fx, "table public.renamed_t (renamed public.quiet_t on the source) has another name on the "
                           "source: after a cutover the application would not find it on the new primary: it keeps its "
                           "old name on the target until the table's next change arrives (with schema: copy pgshift "
                           "renames it then): write the table on the source, or rename it on the target: ALTER TABLE "
                           "\"public\".\"renamed_t\" RENAME TO \"quiet_t\"",
                       30s));
    fx.source().exec("UPDATE quiet_t SET note = 'written' WHERE id = 5");
    REQUIRE(fx.converged({"public.quiet_t", "public.\"Other Things\""}, 60s));
}

TEST_CASE("initial copy: a table renamed on the source stops apply with the statement under schema: verify",
          "[integration][initial_copy]")
{
    auto o = copy_options("renamedv", 0);
    o.schema_sql = "CREATE TABLE named (id int PRIMARY KEY, note text);";
    o.daemon.schema = "verify";
    ReplicationFixture fx(o);
    fx.source().exec("INSERT INTO named SELECT g, 'named ' || g FROM generate_series(1, 10) g");
    fx.daemon().start();
    REQUIRE(wait_copy_done(fx, 60s));
    fx.source().exec("ALTER TABLE named RENAME TO renamed_t");
    fx.source().exec("UPDATE renamed_t SET note = 'updated' WHERE id = 1");
    CHECK(wait_for_log(fx, "table public.named was renamed to public.renamed_t on the source (the same relation): "
                           "rename it on the target (ALTER TABLE \"public\".\"named\" RENAME TO \"renamed_t\"), then run "
                           "`pgshift resume`", 30s));
    CHECK(fx.target().value("SELECT note FROM named WHERE id = 1") == "named 1");
    fx.target().exec("ALTER TABLE named RENAME TO renamed_t");
    auto r = run_command({pgshift_binary().string(), "resume", "--config", fx.daemon().config_path().string()});
    CHECK(r.exit_code == 0);
    REQUIRE(fx.converged({"public.renamed_t"}, 60s));
    CHECK(wait_for_log(fx, "table public.named was renamed to public.renamed_t on the source, and the target has "
                           "public.renamed_t: applying its changes there", 10s));
}
