// Integration: cutover and rollback (SPEC section 3) with real servers, under a write load whose
// clients follow the primary the way an application behind a runbook would.
//
// - The ledger has no key (REPLICA IDENTITY FULL): a transaction applied twice shows as a
//   duplicate row, one never applied as a missing one. Each writer numbers its transactions and
//   retries the same number until it commits, so on both servers the ledger must end holding
//   exactly 1..last for every writer, once.
// - `orders` takes its key from a sequence (DEFAULT nextval) on whichever server is the primary:
//   without the sequence sync of cutover the new primary's inserts collide with existing keys.
// - The follower polls GET /v1/status and points the writers at the server `direction` names.
#include "harness/load_threads.hpp"
#include "harness/replication_fixture.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <iostream>
#include <memory>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <regex>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

const char* const k_schema = R"sql(
CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, port int NOT NULL DEFAULT current_setting('port')::int);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE orders (id bigserial PRIMARY KEY, writer int NOT NULL, seq int NOT NULL, note text);
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
)sql";

const std::vector<std::string> k_tables = {"public.ledger", "public.orders", "public.accounts"};

constexpr int k_writers = 3;

/// curl against the daemon: the body (empty when it cannot connect).
std::string http(const std::string& method, const std::string& url)
{
    return run_command({"/usr/bin/curl", "-s", "--max-time", "5", "-X", method, url}).output;
}

std::string field(const std::string& json, const std::string& name)
{
    std::smatch m;
    std::regex re("\"" + name + "\":\"?([^\",}]*)\"?");
    return std::regex_search(json, m, re) ? m[1].str() : "";
}

/// Waits up to `timeout` for `done`; true when it held.
template <class F>
bool wait_for(F done, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (done())
            return true;
        std::this_thread::sleep_for(50ms);
    }
    return done();
}

/// `pgshift <command> --wait`: exit code and the final JSON line.
std::pair<int, std::string> operation(DaemonProcess& d, const std::string& command)
{
    auto r = run_command({pgshift_binary().string(), command, "--wait", "--config", d.config_path().string()});
    auto out = r.output;
    while (!out.empty() && out.back() == '\n')
        out.pop_back();
    auto nl = out.rfind('\n');
    return {r.exit_code, nl == std::string::npos ? out : out.substr(nl + 1)};
}

bool ready(DaemonProcess& d)
{
    return run_command({"/usr/bin/curl", "-sf", "--max-time", "2", d.control_url() + "/readyz"}).exit_code == 0;
}

/// Writers that follow the primary: each commits numbered transactions (a ledger row, an order
/// with a sequence-made key, an account update) on the server GET /v1/status names, and
/// retries the same number on the other one when the write is refused there.
class FollowingWriters {
public:
    FollowingWriters(ReplicationFixture& fx)
        : fx_(fx), follower_(1, [this](int, const auto& stop) { follow(stop); })
    {
        for (int i = 0; i < 500 && direction_.load() < 0; ++i)
            std::this_thread::sleep_for(20ms);
        if (direction_.load() < 0)
            throw std::runtime_error("GET /v1/status names no direction");
        writers_ = std::make_unique<LoadThreads>(k_writers, [this](int w, const auto& stop) { run(w, stop); });
    }

    void stop()
    {
        if (writers_)
            writers_->stop();
        follower_.stop();
    }
    /// Commits so far on the source (0) and the target (1).
    [[nodiscard]] int committed_on(int server) const { return on_[server].load(); }
    [[nodiscard]] int committed() const { return on_[0].load() + on_[1].load(); }
    [[nodiscard]] int last_seq(int writer) const { return last_[writer].load(); }
    /// Errors that are not "this server refuses writes" or a lost connection.
    [[nodiscard]] std::string unexpected_errors() const
    {
        std::lock_guard lk(mutex_);
        return unexpected_ + (writers_ ? writers_->errors() : "");
    }
    [[nodiscard]] int refused() const { return refused_.load(); }

private:
    void follow(const std::atomic<bool>& stop)
    {
        while (!stop) {
            auto s = http("GET", fx_.daemon().control_url() + "/v1/status");
            auto d = field(s, "direction");
            if (d == "forward" || d == "reverse")
                direction_.store(d == "reverse" ? 1 : 0);
            std::this_thread::sleep_for(20ms);
        }
    }

    void run(int writer, const std::atomic<bool>& stop)
    {
        std::unique_ptr<pgshift::pg::Connection> conn;
        int server = -1;
        int seq = 0;
        while (!stop) {
            const int next = seq + 1;
            try {
                int want = direction_.load();
                if (!conn || server != want) {
                    conn.reset();
                    server = want;
                    conn = std::make_unique<pgshift::pg::Connection>(
                        (server ? fx_.target() : fx_.source()).conninfo());
                }
                conn->exec("BEGIN");
                conn->exec_params("INSERT INTO ledger (writer, seq) VALUES ($1, $2)",
                                  {std::to_string(writer), std::to_string(next)});
                conn->exec_params("INSERT INTO orders (writer, seq, note) VALUES ($1, $2, 'o')",
                                  {std::to_string(writer), std::to_string(next)});
                conn->exec_params("UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                                  {std::to_string(next % 10)});
                try {
                    conn->exec("COMMIT");
                } catch (const pgshift::pg::PgError&) {
                    // Did it commit before the connection went? Ask that server (reads always work).
                    auto check = (server ? fx_.target() : fx_.source()).connect();
                    auto r = check.exec_params("SELECT count(*) FROM ledger WHERE writer = $1 AND seq = $2",
                                               {std::to_string(writer), std::to_string(next)});
                    if (r.get(0, 0) == "0")
                        throw;
                }
                seq = next;
                last_[writer].store(seq);
                on_[server].fetch_add(1);
            } catch (const pgshift::pg::PgError& e) {
                // 25006: the fence; a broken connection: a session the fence ended.
                if (e.sqlstate() == "25006" || e.broken() || e.sqlstate() == "57P01") {
                    refused_.fetch_add(1);
                } else {
                    std::lock_guard lk(mutex_);
                    unexpected_ += "writer " + std::to_string(writer) + " on " + (server ? "target" : "source") +
                                   ": " + e.what() + "\n";
                }
                conn.reset();
                std::this_thread::sleep_for(10ms);
            } catch (const std::exception& e) {
                std::lock_guard lk(mutex_);
                unexpected_ += "writer " + std::to_string(writer) + ": " + e.what() + "\n";
                conn.reset();
                std::this_thread::sleep_for(50ms);
            }
            std::this_thread::sleep_for(3ms);
        }
    }

    ReplicationFixture& fx_;
    std::atomic<int> direction_{-1};
    std::atomic<int> on_[2] = {0, 0};
    std::atomic<int> last_[k_writers] = {};
    std::atomic<int> refused_{0};
    mutable std::mutex mutex_;
    std::string unexpected_;
    LoadThreads follower_; // last: threads stop before the members they use go
    std::unique_ptr<LoadThreads> writers_;
};

/// Every writer's numbers 1..last exactly once in `server`'s ledger (no duplicate, none missing).
void check_ledger(TestCluster& server, const FollowingWriters& w, const char* name)
{
    INFO("ledger on the " << name);
    CHECK(server.value("SELECT count(*) FROM (SELECT writer, seq FROM ledger GROUP BY 1, 2 HAVING count(*) > 1) d") ==
          "0");
    for (int k = 0; k < k_writers; ++k) {
        auto r = server.query("SELECT count(*), coalesce(max(seq), 0), count(DISTINCT seq) FROM ledger WHERE writer = " +
                              std::to_string(k));
        INFO("writer " << k << " committed up to " << w.last_seq(k));
        CHECK(r.at(0).at(0).value() == std::to_string(w.last_seq(k)));
        CHECK(r.at(0).at(1).value() == std::to_string(w.last_seq(k)));
        CHECK(r.at(0).at(2).value() == std::to_string(w.last_seq(k)));
    }
}

FixtureOptions options(const std::string& cutover_yaml, int workers = 2)
{
    FixtureOptions o;
    o.schema_sql = k_schema;
    o.daemon.name = "co";
    o.daemon.workers = workers;
    o.daemon.log_level = "info";
    o.daemon.extra_yaml = "cutover: " + cutover_yaml + "\n";
    return o;
}

/// The indexes (without their names), constraints and NOT NULL columns of orders and accounts.
const std::string k_objects =
    "SELECT string_agg(d, E'\n' ORDER BY d) FROM ("
    " SELECT replace(pg_get_indexdef(indexrelid), ' INDEX ' || quote_ident(c.relname) || ' ON ', ' INDEX ON ') d"
    " FROM pg_index JOIN pg_class c ON c.oid = indexrelid WHERE indrelid IN ('orders'::regclass, 'accounts'::regclass)"
    " UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint"
    " WHERE conrelid IN ('orders'::regclass, 'accounts'::regclass)"
    " UNION ALL SELECT attrelid::regclass || '.' || attname || ' NOT NULL' FROM pg_attribute"
    " WHERE attrelid IN ('orders'::regclass, 'accounts'::regclass) AND attnum > 0 AND attnotnull) x";

void seed(ReplicationFixture& fx)
{
    auto sql = "INSERT INTO accounts SELECT g, 0 FROM generate_series(0, 9) g";
    fx.source().exec(sql);
    fx.target().exec(sql);
}

} // namespace

TEST_CASE("cutover, rollback, cutover under a load that follows the primary: every write on both servers once, "
          "no key collides, finish leaves nothing",
          "[integration][cutover]")
{
    // verify: none, so that the drain alone must bring every write over (verify would hold apply too).
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: none}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    FollowingWriters writers(fx);
    REQUIRE(wait_for([&] { return writers.committed_on(0) > 150; }, 30s));

    std::vector<double> downtimes;
    // `behind`: apply is kept behind for that long by a lock on the new primary, so the drain
    // has real work (writes committed before the fence but not applied yet).
    auto switch_to = [&](const char* command, int primary, std::chrono::milliseconds behind = 0ms) {
        INFO(command);
        const int before = writers.committed_on(primary);
        std::thread blocker;
        if (behind > 0ms) {
            auto locked = std::make_shared<std::atomic<bool>>(false);
            blocker = std::thread([&, behind, locked] {
                auto c = (primary ? fx.target() : fx.source()).connect();
                c.exec("BEGIN; LOCK TABLE accounts IN EXCLUSIVE MODE");
                locked->store(true);
                std::this_thread::sleep_for(behind);
                c.exec("COMMIT");
            });
            while (!locked->load())
                std::this_thread::sleep_for(5ms);
            std::this_thread::sleep_for(300ms); // writes pile up behind the lock
        }
        auto [code, json] = operation(fx.daemon(), command);
        if (blocker.joinable())
            blocker.join();
        INFO(json);
        REQUIRE(code == 0);
        CHECK(field(json, "phase") == "done");
        CHECK(field(json, "error") == "null");
        downtimes.push_back(std::stod(field(json, "write_downtime_seconds")));
        auto status = http("GET", fx.daemon().control_url() + "/v1/status");
        CHECK(field(status, "direction") == (primary ? "reverse" : "forward"));
        // The writers moved to the new primary and commit there.
        REQUIRE(wait_for([&] { return writers.committed_on(primary) > before + 150; }, 30s));
        // Their writes reach the other server: a marker written on the new primary arrives.
        auto& from = primary ? fx.target() : fx.source();
        auto& to = primary ? fx.source() : fx.target();
        auto marker = from.value("INSERT INTO orders (writer, seq, note) VALUES (-1, 0, 'marker') RETURNING id");
        CHECK(wait_for([&] { return to.value("SELECT count(*) FROM orders WHERE id = " + marker) == "1"; }, 20s));
    };
    switch_to("cutover", 1, 1500ms);
    // The old primary refuses writes, whatever the session says about read-only.
    {
        auto c = fx.source().connect();
        c.exec("SET default_transaction_read_only = off");
        CHECK_THROWS_WITH(c.exec("INSERT INTO accounts VALUES (100, 1)"), Catch::Contains("fenced by pgshift"));
    }
    switch_to("rollback", 0);
    switch_to("cutover", 1);

    writers.stop();
    INFO("unexpected writer errors: " << writers.unexpected_errors());
    CHECK(writers.unexpected_errors().empty());
    CHECK(writers.refused() > 0); // the load really met the fence
    REQUIRE(fx.converged(k_tables, 60s));
    check_ledger(fx.source(), writers, "source");
    check_ledger(fx.target(), writers, "target");
    // Keys made by both servers' sequences never collided (apply would have stopped on one).
    CHECK(fx.target().value("SELECT count(*) FROM orders") == fx.source().value("SELECT count(*) FROM orders"));
    for (double d : downtimes)
        std::cout << "write downtime: " << d << " s\n";

    // finish: nothing of pgshift's is left that could hold WAL or an origin slot.
    auto r = run_command({pgshift_binary().string(), "finish", "--config", fx.daemon().config_path().string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto code = fx.daemon().wait_exit(60s);
    REQUIRE(code);
    CHECK(*code == 0);
    for (auto* server : {&fx.source(), &fx.target()}) {
        CHECK(server->value("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgshift%'") == "0");
        CHECK(server->value("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pgshift%'") == "0");
        CHECK(server->value("SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgshift%'") == "0");
    }
    // A restart after finish does nothing and says so.
    fx.daemon().start();
    auto again = fx.daemon().wait_exit(30s);
    REQUIRE(again);
    CHECK(*again == 0);
}

TEST_CASE("the fence stops a role that turns read-only off, ends its open transaction, lasts after cutover",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: checksums}"));
    seed(fx);
    for (auto* server : {&fx.source(), &fx.target()})
        server->exec("CREATE ROLE app LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "
                     "app; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app");
    auto as_app = [](TestCluster& c) { return pgshift::pg::Connection(c.conninfo() + " user=app"); };
    setenv("PGSHIFT_TEST_CUTOVER_STALL", "syncing_sequences:4", 1);
    REQUIRE(fx.start_and_wait_streaming());
    unsetenv("PGSHIFT_TEST_CUTOVER_STALL");
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 30s));
    // An application session with a write in progress when the fence comes.
    auto open_txn = as_app(fx.source());
    open_txn.exec("BEGIN");
    open_txn.exec("INSERT INTO orders (writer, seq, note) VALUES (-2, 1, 'open before the fence')");
    auto post = http("POST", fx.daemon().control_url() + "/v1/cutover");
    INFO(post);
    REQUIRE(field(post, "id") == "cutover-1");
    REQUIRE(wait_for([&] { return field(http("GET", fx.daemon().control_url() + "/v1/cutover"), "phase") ==
                                  "syncing_sequences"; },
                     20s));
    // During the cutover (fenced, not done yet).
    auto refused = [&](const char* when) {
        INFO(when);
        auto c = as_app(fx.source());
        c.exec("SET default_transaction_read_only = off");
        c.exec("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE");
        try {
            c.exec("INSERT INTO orders (writer, seq, note) VALUES (-2, 2, 'while fenced')");
            FAIL("the insert was accepted");
        } catch (const pgshift::pg::PgError& e) {
            CHECK(e.sqlstate() == "25006");
        }
        try {
            c.exec("BEGIN READ WRITE; UPDATE accounts SET balance = 7 WHERE id = 1; COMMIT");
            FAIL("the update was accepted");
        } catch (const pgshift::pg::PgError& e) {
            CHECK(e.sqlstate() == "25006");
        }
    };
    refused("during the cutover");
    // The session that was writing when the fence came was ended; its write never committed.
    CHECK_THROWS(open_txn.exec("COMMIT"));
    REQUIRE(wait_for([&] { return field(http("GET", fx.daemon().control_url() + "/v1/cutover"), "phase") == "done"; },
                     30s));
    refused("after the cutover");
    CHECK(fx.source().value("SELECT count(*) FROM orders WHERE writer = -2") == "0");
    // The new primary takes the same role's writes.
    auto t = as_app(fx.target());
    t.exec("INSERT INTO orders (writer, seq, note) VALUES (-2, 3, 'on the new primary')");
    CHECK(wait_for([&] { return fx.source().value("SELECT count(*) FROM orders WHERE writer = -2") == "1"; }, 20s));
}

TEST_CASE("cutover refuses lag (412), a drain that cannot finish in time aborts, the old primary takes writes again",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 4, max_lag_seconds: 2}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    auto url = fx.daemon().control_url();
    // Apply blocked behind a lock on the target: lag builds up.
    auto blocker = fx.target().connect();
    blocker.exec("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (1, 1)");
    REQUIRE(wait_for([&] { return std::stod(field(http("GET", url + "/v1/lag"), "seconds")) > 2.5; }, 20s));
    auto r = run_command({"/usr/bin/curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url + "/v1/cutover"});
    INFO(r.output);
    CHECK(r.output.find("\n412") != std::string::npos);
    CHECK(r.output.find("above cutover.max_lag_seconds") != std::string::npos);
    blocker.exec("ROLLBACK");
    REQUIRE(fx.converged(k_tables, 30s));

    // Now lag is low when it starts, but apply cannot reach the final position.
    blocker.exec("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (1, 2)");
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    CHECK(code == 1);
    CHECK(field(json, "phase") == "aborted");
    CHECK(json.find("cutover.timeout_seconds") != std::string::npos);
    CHECK(json.find("draining") != std::string::npos);
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (1, 3)"); // writable again
    blocker.exec("ROLLBACK");
    REQUIRE(fx.converged(k_tables, 30s));
    CHECK(field(http("GET", url + "/v1/status"), "direction") == "forward");
    CHECK(fx.target().value("SELECT count(*) FROM pg_replication_slots") == "0"); // no reverse slot left
}

TEST_CASE("cutover refuses while a selected table is not replicated (412), and behind the fence one created just "
          "before it",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: counts}"));
    seed(fx);
    // Every cutover of this daemon waits 3 s as its fence starts going up.
    setenv("PGSHIFT_TEST_CUTOVER_STALL", "fencing:3", 1);
    REQUIRE(fx.start_and_wait_streaming());
    unsetenv("PGSHIFT_TEST_CUTOVER_STALL");
    auto url = fx.daemon().control_url();
    auto status = [&] { return http("GET", url + "/v1/status"); };
    auto none_unreplicated = [&] { return status().find("\"tables_not_replicated\":[]") != std::string::npos; };
    REQUIRE(wait_for(none_unreplicated, 20s));

    // A table created on the source only: selected, not replicated (its target table is missing).
    fx.source().exec("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late VALUES (1)");
    REQUIRE(wait_for([&] { return status().find("table public.late is not replicated") != std::string::npos; }, 20s));
    auto r = run_command({"/usr/bin/curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url + "/v1/cutover"});
    INFO(r.output);
    CHECK(r.output.find("\n412") != std::string::npos);
    CHECK(r.output.find("table public.late is not replicated") != std::string::npos);
    // Created on the target, it joins with its row, and nothing is left unreplicated.
    fx.target().exec("CREATE TABLE late (id int PRIMARY KEY)");
    REQUIRE(wait_for(none_unreplicated, 20s));
    CHECK(fx.target().value("SELECT count(*) FROM late") == "1");

    // One created while the cutover starts, before the watch sees it: the check behind the fence
    // refuses to switch (verify compares published tables only and would pass).
    auto post = http("POST", url + "/v1/cutover");
    INFO(post);
    REQUIRE(field(post, "id") == "cutover-1");
    REQUIRE(wait_for([&] { return field(http("GET", url + "/v1/cutover"), "phase") == "fencing"; }, 20s));
    fx.source().exec("CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (1)");
    std::string report;
    REQUIRE(wait_for([&] {
        report = http("GET", url + "/v1/cutover");
        return field(report, "phase") == "aborted" || field(report, "phase") == "done";
    }, 30s));
    INFO(report);
    CHECK(field(report, "phase") == "aborted");
    CHECK(report.find("public.later") != std::string::npos);
    CHECK(field(status(), "direction") == "forward");
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (1, 1)"); // writable again
    REQUIRE(fx.converged(k_tables, 30s));
}


TEST_CASE("kill -9 in every phase of a cutover: undone before the new primary is ready, completed after, nothing lost",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 60}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    FollowingWriters writers(fx);
    REQUIRE(wait_for([&] { return writers.committed() > 100; }, 30s));
    fx.daemon().kill(SIGKILL);
    auto url = fx.daemon().control_url();
    for (std::string point : {"fencing", "draining", "syncing_sequences", "verifying", "switching", "switching_ready"}) {
        INFO("killed at " << point);
        setenv("PGSHIFT_TEST_CUTOVER_STALL", (point + ":30").c_str(), 1);
        fx.daemon().start();
        unsetenv("PGSHIFT_TEST_CUTOVER_STALL");
        REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 60s));
        const int before = writers.committed_on(0);
        REQUIRE(wait_for([&] { return writers.committed_on(0) > before + 20; }, 30s));
        auto post = http("POST", url + "/v1/cutover");
        INFO(post);
        REQUIRE(field(post, "id").rfind("cutover-", 0) == 0);
        REQUIRE(wait_for(
            [&] {
                if (point == "switching_ready")
                    return fx.target().value("SELECT coalesce(bool_or(ready), false) FROM pgshift.switchover") == "t";
                return field(http("GET", url + "/v1/cutover"), "phase") == point;
            },
            30s));
        fx.daemon().kill(SIGKILL);
        fx.daemon().start();
        REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 60s));
        auto op = http("GET", url + "/v1/cutover");
        INFO(op);
        const bool completed = point == "switching_ready";
        CHECK(field(op, "phase") == (completed ? "done" : "aborted"));
        CHECK(field(http("GET", url + "/v1/status"), "direction") == (completed ? "reverse" : "forward"));
        // Exactly one server takes writes, and the writers keep committing there.
        auto& primary = completed ? fx.target() : fx.source();
        auto& fenced = completed ? fx.source() : fx.target();
        CHECK_NOTHROW(primary.exec("UPDATE accounts SET balance = balance WHERE id = 0"));
        if (completed)
            CHECK_THROWS_WITH(fenced.exec("UPDATE accounts SET balance = balance WHERE id = 0"),
                              Catch::Contains("fenced by pgshift"));
        const int on = writers.committed_on(completed ? 1 : 0);
        CHECK(wait_for([&] { return writers.committed_on(completed ? 1 : 0) > on + 20; }, 30s));
        if (completed) {
            auto [code, json] = operation(fx.daemon(), "rollback");
            INFO(json);
            REQUIRE(code == 0);
        }
        fx.daemon().kill(SIGKILL);
    }
    fx.daemon().start();
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 60s));
    writers.stop();
    INFO("unexpected writer errors: " << writers.unexpected_errors());
    CHECK(writers.unexpected_errors().empty());
    REQUIRE(fx.converged(k_tables, 60s));
    check_ledger(fx.source(), writers, "source");
    check_ledger(fx.target(), writers, "target");
}

TEST_CASE("the drain waits for a backlog: writes committed before the fence but not applied yet reach the new "
          "primary before it takes over",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 60, verify: none, max_lag_seconds: 30}", 1));
    seed(fx);
    // Apply on the target is slow (3 ms a ledger row, a trigger that fires in replica mode too),
    // so a backlog builds up behind the writers.
    fx.target().exec("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(0.003); RETURN NEW; END $$; "
                     "CREATE TRIGGER slow BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION slow(); "
                     "ALTER TABLE ledger ENABLE ALWAYS TRIGGER slow");
    REQUIRE(fx.start_and_wait_streaming());
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 30s));
    FollowingWriters writers(fx);
    REQUIRE(wait_for([&] { return writers.committed_on(0) > 600; }, 30s));
    auto behind = std::stoll(fx.source().value("SELECT count(*) FROM ledger")) -
                  std::stoll(fx.target().value("SELECT count(*) FROM ledger"));
    INFO("ledger rows not applied yet when the cutover starts: " << behind);
    CHECK(behind > 100);
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    REQUIRE(code == 0);
    REQUIRE(wait_for([&] { return writers.committed_on(1) > 50; }, 30s));
    writers.stop();
    REQUIRE(fx.converged(k_tables, 60s));
    check_ledger(fx.source(), writers, "source");
    check_ledger(fx.target(), writers, "target");
}

TEST_CASE("cutover, rollback and finish as a non-superuser role holding the documented grants",
          "[integration][cutover]")
{
    auto o = options("{timeout_seconds: 30, verify: checksums}");
    o.schema_sql = std::string(k_schema) + R"sql(
CREATE ROLE mig LOGIN REPLICATION;
GRANT CREATE ON DATABASE postgres TO mig;
GRANT pg_signal_backend TO mig;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_oid(text),
  pg_replication_origin_advance(text, pg_lsn), pg_replication_origin_progress(text, boolean),
  pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz),
  pg_replication_origin_drop(text) TO mig;
GRANT SET ON PARAMETER session_replication_role TO mig;
ALTER TABLE ledger OWNER TO mig; ALTER TABLE orders OWNER TO mig; ALTER TABLE accounts OWNER TO mig;
)sql";
    o.daemon_conninfo_suffix = " user=mig";
    ReplicationFixture fx(o);
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 30s));
    CHECK(fx.source().value("SELECT rolsuper FROM pg_roles WHERE rolname = 'mig'") == "f");
    fx.source().exec("INSERT INTO orders (writer, seq) SELECT 1, g FROM generate_series(1, 100) g");
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    REQUIRE(code == 0);
    fx.target().exec("INSERT INTO orders (writer, seq) VALUES (2, 1)");
    CHECK(wait_for([&] { return fx.source().value("SELECT count(*) FROM orders WHERE writer = 2") == "1"; }, 20s));
    CHECK_THROWS_WITH(fx.source().exec("INSERT INTO orders (writer, seq) VALUES (3, 1)"),
                      Catch::Contains("fenced by pgshift"));
    auto [code2, json2] = operation(fx.daemon(), "rollback");
    INFO(json2);
    REQUIRE(code2 == 0);
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (3, 1)");
    CHECK(wait_for([&] { return fx.target().value("SELECT count(*) FROM orders WHERE writer = 3") == "1"; }, 20s));
    REQUIRE(fx.converged(k_tables, 30s));
    auto r = run_command({pgshift_binary().string(), "finish", "--config", fx.daemon().config_path().string()});
    REQUIRE(r.exit_code == 0);
    auto exit = fx.daemon().wait_exit(60s);
    REQUIRE(exit);
    CHECK(*exit == 0);
    for (auto* server : {&fx.source(), &fx.target()})
        CHECK(server->value("SELECT count(*) FROM pg_replication_slots") == "0");
}

TEST_CASE("a column and an index added on the new primary after cutover reach the old one, and rollback keeps them",
          "[integration][cutover]")
{
    // An application deploy during the rollback window: the reverse direction (schema: copy,
    // the default) adds the column on the old primary, whose rows read the same default.
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: counts}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 30s));
    fx.source().exec("INSERT INTO orders (writer, seq) SELECT 1, g FROM generate_series(1, 50) g");
    REQUIRE(fx.converged(k_tables, 30s));
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    REQUIRE(code == 0);
    fx.target().exec("ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu'");
    fx.target().exec("INSERT INTO orders (writer, seq, region) VALUES (2, 1, 'us')");
    // (to_jsonb: the column does not exist on the source until pgshift adds it)
    CHECK(wait_for([&] { return fx.source().value("SELECT count(*) FROM orders o WHERE to_jsonb(o)->>'region' = 'us'") == "1"; },
                   20s));
    CHECK(fx.source().value("SELECT count(*) FROM orders WHERE region = 'eu'") == "50");
    // The same deploy's index reaches the old primary too (the schema follower follows the
    // direction streaming now), and the rollback waits for it.
    fx.target().exec("CREATE INDEX orders_region_idx ON orders (region)");
    CHECK(wait_for([&] { return fx.source().value("SELECT to_regclass('orders_region_idx') IS NOT NULL") == "t"; }, 30s));
    auto [code2, json2] = operation(fx.daemon(), "rollback");
    INFO(json2);
    REQUIRE(code2 == 0);
    fx.source().exec("INSERT INTO orders (writer, seq, region) VALUES (3, 1, 'ap')");
    REQUIRE(fx.converged(k_tables, 30s));
    CHECK(fx.target().value("SELECT region FROM orders WHERE writer = 3") == "ap");
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(log.find("column region (text) of source table public.orders was missing on the target: added it") !=
          std::string::npos);
}

TEST_CASE("tables made on the new primary reach the old one with their rows before a rollback",
          "[integration][cutover]")
{
    // One made on the target alone while it was the target, one made by an application deploy
    // after the cutover: the reverse direction (schema: copy) creates both on the old primary and
    // copies their rows, and a rollback is refused until it has.
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: counts}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    REQUIRE(wait_for([&] { return ready(fx.daemon()); }, 30s));
    fx.target().exec("CREATE TABLE target_only (id int PRIMARY KEY, note text); "
                     "INSERT INTO target_only VALUES (1, 'before the cutover')");
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    REQUIRE(code == 0);
    fx.target().exec("INSERT INTO target_only VALUES (2, 'after the cutover')");
    fx.target().exec("CREATE TABLE made_after (id int PRIMARY KEY, v int); "
                     "INSERT INTO made_after SELECT g, g FROM generate_series(1, 20) g");
    auto on_old = [&](const std::string& table, const std::string& count) {
        return fx.source().value("SELECT to_regclass('" + table + "') IS NOT NULL") == "t" &&
               fx.source().value("SELECT count(*) FROM " + table) == count;
    };
    CHECK(wait_for([&] { return on_old("target_only", "2") && on_old("made_after", "20"); }, 30s));
    fx.target().exec("INSERT INTO made_after VALUES (21, 21); UPDATE target_only SET note = 'updated' WHERE id = 1");
    auto [code2, json2] = operation(fx.daemon(), "rollback");
    INFO(json2);
    REQUIRE(code2 == 0);
    CHECK(fx.source().value("SELECT count(*) FROM made_after") == "21");
    CHECK(fx.source().value("SELECT note FROM target_only WHERE id = 1") == "updated");
    fx.source().exec("INSERT INTO made_after VALUES (22, 22)");
    REQUIRE(fx.converged({"public.made_after", "public.target_only"}, 30s));
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(log.find("table public.target_only exists on the new primary only") != std::string::npos);
    CHECK(log.find("table public.made_after appeared on the source: created it on the target") != std::string::npos);
}

TEST_CASE("indexes and constraints made on the source later are built on the target, and a cutover waits for them",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: counts}"));
    seed(fx);
    // Every cutover of this daemon waits 2 s before its checks.
    setenv("PGSHIFT_TEST_CUTOVER_STALL", "checking:2", 1);
    REQUIRE(fx.start_and_wait_streaming());
    unsetenv("PGSHIFT_TEST_CUTOVER_STALL");
    auto url = fx.daemon().control_url();
    auto status = [&] { return http("GET", url + "/v1/status"); };
    fx.source().exec("INSERT INTO orders (writer, seq, note) SELECT g % 10, g, 'n' || g FROM generate_series(1, 5000) g");
    REQUIRE(fx.converged(k_tables, 30s));
    // A row on the target alone that breaks the unique constraint to come: its build fails and
    // leaves an invalid index, which is dropped and built again once the row is gone.
    fx.target().exec("INSERT INTO orders (id, writer, seq) VALUES (999999, 1, 1)");
    // An application deploy: an index (quoted, partial), a unique constraint, a check and a
    // foreign key, while rows keep arriving.
    fx.source().exec(R"(CREATE INDEX "Orders By Note" ON orders (note) WHERE seq > 100;
                        ALTER TABLE orders ADD CONSTRAINT orders_writer_seq_key UNIQUE (writer, seq);
                        ALTER TABLE accounts ADD CONSTRAINT balance_known CHECK (balance > -1000000);
                        ALTER TABLE orders ADD CONSTRAINT orders_writer_fk FOREIGN KEY (writer) REFERENCES accounts (id))");
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (1, 6001)");
    const auto on_source = fx.source().value(k_objects);
    REQUIRE(wait_for([&] { return status().find("orders_writer_seq_key of public.orders exists on the source but not on "
                                                 "the target: pgshift builds it (schema: copy); the last attempt failed: "
                                                 "query failed: ERROR:  could not create unique index") !=
                                        std::string::npos; },
                     30s));
    CHECK(fx.target().value("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == "1");
    fx.target().exec("DELETE FROM orders WHERE id = 999999");
    CHECK(wait_for([&] { return fx.target().value(k_objects) == on_source; }, 40s));
    CHECK(fx.target().value(k_objects) == on_source);
    CHECK(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));
    REQUIRE(fx.converged(k_tables, 30s));

    // One pgshift does not build (an exclusion constraint holds an ACCESS EXCLUSIVE lock while
    // its index builds), made once the cutover's preconditions passed: the switch's own check
    // refuses it.
    auto post = http("POST", url + "/v1/cutover");
    INFO(post);
    REQUIRE(field(post, "id") == "cutover-1");
    fx.source().exec("ALTER TABLE accounts ADD CONSTRAINT accounts_excl EXCLUDE USING btree (id WITH =)");
    std::string json;
    REQUIRE(wait_for([&] {
        json = http("GET", url + "/v1/cutover");
        return field(json, "phase") == "aborted" || field(json, "phase") == "done";
    }, 30s));
    INFO(json);
    CHECK(field(json, "phase") == "aborted");
    CHECK(json.find("the new primary differs from the old in 1 index(es), constraint(s) or table(s)' row-level security: exclusion constraint "
                    "accounts_excl of public.accounts") != std::string::npos);
    // Then the status lists it, with the statement, and the precondition refuses (412).
    REQUIRE(wait_for([&] { return status().find("accounts_excl of public.accounts exists on the source") != std::string::npos; },
                     20s));
    CHECK(status().find("ALTER TABLE public.accounts ADD CONSTRAINT \\\"accounts_excl\\\" EXCLUDE USING btree (id WITH =)") !=
          std::string::npos);
    auto r = run_command({"/usr/bin/curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url + "/v1/cutover"});
    INFO(r.output);
    CHECK(r.output.find("\n412") != std::string::npos);
    CHECK(r.output.find("exclusion constraint accounts_excl of public.accounts exists on the source but not on the "
                        "target") != std::string::npos);
    // Made on the target by hand: the cutover goes through.
    fx.target().exec("ALTER TABLE accounts ADD CONSTRAINT accounts_excl EXCLUDE USING btree (id WITH =)");
    REQUIRE(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));
    auto [code, json2] = operation(fx.daemon(), "cutover");
    INFO(json2);
    CHECK(code == 0);
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(log.find("unique constraint orders_writer_seq_key of public.orders built on the target") != std::string::npos);
}

TEST_CASE("rules dropped on the source are dropped on the target, at once when apply meets a row that breaks one",
          "[integration][cutover]")
{
    // The same rules on both sides, then an application deploy drops them on the source.
    const std::string rules = R"(ALTER TABLE orders ADD CONSTRAINT orders_writer_seq_key UNIQUE (writer, seq);
                                 CREATE UNIQUE INDEX orders_note_key ON orders (note);
                                 ALTER TABLE accounts ADD CONSTRAINT balance_cap CHECK (balance < 1000000))";
    // In one transaction, each drop with a row that breaks the rule right after it.
    const std::string drops_and_rows = R"(BEGIN;
        ALTER TABLE orders DROP CONSTRAINT orders_writer_seq_key;
        INSERT INTO orders (writer, seq, note) VALUES (1, 1, 'a'), (1, 1, 'b');
        ALTER TABLE accounts DROP CONSTRAINT balance_cap;
        UPDATE accounts SET balance = 2000000 WHERE id = 1;
        ALTER TABLE accounts ALTER COLUMN balance DROP NOT NULL;
        UPDATE accounts SET balance = NULL WHERE id = 2;
        COMMIT)";
    SECTION("schema: copy drops them on the target")
    {
        ReplicationFixture fx(options("{timeout_seconds: 30}"));
        seed(fx);
        fx.source().exec(rules);
        fx.target().exec(rules);
        REQUIRE(fx.start_and_wait_streaming());
        auto url = fx.daemon().control_url();
        // No row breaks it: the follower's next look drops it (it looks every 10 s).
        fx.source().exec("DROP INDEX orders_note_key");
        REQUIRE(wait_for([&] { return fx.target().value("SELECT to_regclass('orders_note_key') IS NULL") == "t"; },
                         30s));
        // A look just ended: the next is seconds away, so apply meets each rule first.
        fx.source().exec(drops_and_rows);
        REQUIRE(fx.converged(k_tables, 30s));
        CHECK(fx.target().value(k_objects) == fx.source().value(k_objects));
        CHECK(fx.target().value("SELECT balance IS NULL FROM accounts WHERE id = 2") == "t");
        CHECK(wait_for([&] { return http("GET", url + "/v1/status").find("\"schema_differences\":[]") != std::string::npos; },
                       20s));
        std::ifstream in(fx.daemon().log_path());
        const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        INFO(log);
        CHECK(log.find("unique index orders_note_key of public.orders is no longer on the source: dropping it on the "
                       "target") != std::string::npos);
        for (const char* rule : {"unique constraint orders_writer_seq_key of public.orders",
                                 "check constraint balance_cap of public.accounts",
                                 "NOT NULL of column balance of public.accounts"})
            CHECK(log.find(std::string("the target rejected a row for ") + rule +
                           ", which the source no longer has: dropping it on the target") != std::string::npos);
        CHECK(log.find("apply stopped") == std::string::npos);
    }
    SECTION("schema: verify names the statement, and resume applies once the operator ran it")
    {
        auto o = options("{timeout_seconds: 30}");
        o.daemon.extra_yaml += "schema: verify\n";
        ReplicationFixture fx(o);
        seed(fx);
        fx.source().exec(rules);
        fx.target().exec(rules);
        REQUIRE(fx.start_and_wait_streaming());
        auto url = fx.daemon().control_url();
        fx.source().exec(R"(BEGIN;
            ALTER TABLE accounts DROP CONSTRAINT balance_cap;
            UPDATE accounts SET balance = 2000000 WHERE id = 1;
            COMMIT)");
        std::string status;
        REQUIRE(wait_for([&] {
            status = http("GET", url + "/v1/status");
            return field(status, "state") == "failed";
        }, 30s));
        INFO(status);
        CHECK(status.find("check constraint balance_cap of public.accounts is on the target but not on the source") !=
              std::string::npos);
        CHECK(status.find(R"(drop it there: ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS \"balance_cap\")") !=
              std::string::npos);
        fx.target().exec("ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS balance_cap");
        http("POST", url + "/v1/resume");
        REQUIRE(fx.converged(k_tables, 30s));
        CHECK(fx.target().value("SELECT balance FROM accounts WHERE id = 1") == "2000000");
    }
}

TEST_CASE("privileges that roles hold on the source's tables are granted on the target, a missing role is named",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30}"));
    seed(fx);
    // The application's role exists on both servers; on the source it may write orders (and use
    // their sequence) and owns accounts. A reporting role exists on the source alone.
    fx.source().exec(R"(CREATE ROLE app LOGIN; CREATE ROLE reporting LOGIN;
                        GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app;
                        GRANT USAGE ON SEQUENCE orders_id_seq TO app;
                        ALTER TABLE accounts OWNER TO app;
                        GRANT SELECT ON ledger TO reporting;
                        CREATE VIEW big_orders AS SELECT id, writer FROM orders WHERE seq > 100;
                        GRANT SELECT ON big_orders TO app)");
    fx.target().exec("CREATE ROLE app LOGIN");
    const std::string privileges =
        "SELECT coalesce(string_agg(p, ',' ORDER BY p), '') FROM ("
        " SELECT 'orders.' || x FROM unnest('{SELECT,INSERT,UPDATE,DELETE,TRUNCATE}'::text[]) x"
        "  WHERE has_table_privilege('app', 'orders', x)"
        " UNION ALL SELECT 'accounts.' || x FROM unnest('{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}'::text[]) x"
        "  WHERE has_table_privilege('app', 'accounts', x)"
        " UNION ALL SELECT 'orders_id_seq.' || x FROM unnest('{USAGE,SELECT,UPDATE}'::text[]) x"
        "  WHERE has_sequence_privilege('app', 'orders_id_seq', x)"
        " UNION ALL SELECT 'big_orders.' || x FROM unnest('{SELECT,INSERT}'::text[]) x"
        "  WHERE to_regclass('big_orders') IS NOT NULL AND has_table_privilege('app', 'big_orders', x)) s(p)";
    const auto on_source = fx.source().value(privileges);
    REQUIRE(on_source == "accounts.DELETE,accounts.INSERT,accounts.REFERENCES,accounts.SELECT,accounts.TRIGGER,"
                         "accounts.TRUNCATE,accounts.UPDATE,big_orders.SELECT,orders.DELETE,orders.INSERT,orders.SELECT,"
                         "orders.UPDATE,orders_id_seq.USAGE");
    CHECK(fx.target().value(privileges).empty());
    REQUIRE(fx.start_and_wait_streaming());
    CHECK(wait_for([&] { return fx.target().value(privileges) == on_source; }, 45s));
    CHECK(fx.target().value(privileges) == on_source);
    auto url = fx.daemon().control_url();
    CHECK(wait_for([&] { return http("GET", url + "/v1/status").find("\"schema_differences\":[]") != std::string::npos; },
                   20s));
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("privileges of role app (") != std::string::npos);
    CHECK(log.find("granted on the target") != std::string::npos);
    CHECK(log.find("privileges of role reporting (SELECT on public.ledger; USAGE on schema public) are on the source but not on the target: "
                   "the application connecting as reporting after a cutover is refused there: role reporting does "
                   "not exist on the target (pgshift copies no roles or passwords): create it there, then pgshift "
                   "grants them (schema: copy)") != std::string::npos);
    // Once the role exists, it gets them too.
    fx.target().exec("CREATE ROLE reporting LOGIN");
    CHECK(wait_for([&] { return fx.target().value("SELECT has_table_privilege('reporting', 'ledger', 'SELECT')") == "t"; },
                   30s));
}

TEST_CASE("owners of the source's tables, views and functions own them on the target, may create in the schema, "
          "a function kept from PUBLIC is kept from it, and default privileges follow",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30}"));
    seed(fx);
    // The application's role owns a table, a view on it and a SECURITY DEFINER function, and
    // creates tables in public (its migrations): on the target pgshift's role made them all.
    fx.source().exec(R"(CREATE ROLE app LOGIN;
                        GRANT CREATE ON SCHEMA public TO app;
                        ALTER TABLE accounts OWNER TO app;
                        CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 100;
                        ALTER VIEW rich OWNER TO app;
                        CREATE FUNCTION bump(a int) RETURNS void LANGUAGE sql SECURITY DEFINER
                          AS $$ UPDATE public.accounts SET balance = balance + 1 WHERE id = a $$;
                        ALTER FUNCTION bump(int) OWNER TO app;
                        CREATE ROLE other LOGIN; CREATE ROLE admin LOGIN;
                        CREATE FUNCTION reset_all() RETURNS void LANGUAGE sql SECURITY DEFINER
                          AS $$ UPDATE public.accounts SET balance = 0 $$;
                        REVOKE EXECUTE ON FUNCTION reset_all() FROM PUBLIC;
                        GRANT EXECUTE ON FUNCTION reset_all() TO admin;
                        ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO other;
                        ALTER DEFAULT PRIVILEGES FOR ROLE app REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC)");
    fx.target().exec("CREATE ROLE app LOGIN; CREATE ROLE other LOGIN; CREATE ROLE admin LOGIN");
    const std::string owners =
        "SELECT coalesce(string_agg(o, ',' ORDER BY o), '') FROM ("
        " SELECT c.relname || ':' || pg_get_userbyid(c.relowner) FROM pg_class c"
        "  WHERE c.relname IN ('accounts', 'rich', 'orders')"
        " UNION ALL SELECT p.proname || ':' || pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.proname = 'bump'"
        " UNION ALL SELECT 'create:' || has_schema_privilege('app', 'public', 'CREATE')"
        " UNION ALL SELECT 'reset_all:' || x || ':' || has_function_privilege(x, 'reset_all()', 'EXECUTE')"
        "  FROM unnest('{other,admin}'::text[]) x WHERE to_regprocedure('reset_all()') IS NOT NULL) s(o)";
    const auto on_source = fx.source().value(owners);
    REQUIRE(on_source.find("accounts:app,bump:app,create:true,orders:") == 0);
    REQUIRE(on_source.find("reset_all:admin:true,reset_all:other:false") != std::string::npos);
    REQUIRE(fx.start_and_wait_streaming());
    CHECK(wait_for([&] { return fx.target().value(owners) == on_source; }, 45s));
    CHECK(fx.target().value(owners) == on_source);
    const std::string defaults =
        "SELECT coalesce(string_agg(pg_get_userbyid(d.defaclrole) || ':' || coalesce(n.nspname, '*') || ':' || "
        "d.defaclobjtype::text || ':' || d.defaclacl::text, ',' ORDER BY 1), '') "
        "FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace";
    const auto defaults_on_source = fx.source().value(defaults);
    REQUIRE(defaults_on_source.find("app:public:r:") != std::string::npos);
    CHECK(wait_for([&] { return fx.target().value(defaults) == defaults_on_source; }, 30s));
    CHECK(fx.target().value(defaults) == defaults_on_source);
    auto url = fx.daemon().control_url();
    CHECK(wait_for([&] { return http("GET", url + "/v1/status").find("\"schema_differences\":[]") != std::string::npos; },
                   20s));
    // The application's next migration works on the target as on the source, and what it makes
    // gets the source's default privileges.
    fx.target().exec("SET ROLE app; ALTER TABLE accounts ADD COLUMN note text; CREATE TABLE app_made (id int); "
                     "CREATE FUNCTION app_fn() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; RESET ROLE");
    CHECK(fx.target().value("SELECT has_table_privilege('other', 'app_made', 'SELECT')") == "t");
    CHECK(fx.target().value("SELECT has_function_privilege('other', 'app_fn()', 'EXECUTE')") == "f");
    fx.target().exec("DROP FUNCTION app_fn()");
    // And apply goes on into the table it no longer owns.
    fx.target().exec("ALTER TABLE accounts DROP COLUMN note; DROP TABLE app_made");
    fx.source().exec("UPDATE accounts SET balance = balance + 7 WHERE id = 1");
    REQUIRE(fx.converged(k_tables, 30s));
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("owner of table public.accounts (app on the source, ") != std::string::npos);
    CHECK(log.find("EXECUTE on function public.reset_all() for PUBLIC is on the target but not on the source") !=
          std::string::npos);
}

TEST_CASE("functions, procedures and views of the tables' schemas reach the target", "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30}"));
    seed(fx);
    // What the application calls: a function, a procedure, a view with options that calls the
    // function, and a view on a view; one of them exists before the start, the others after.
    fx.source().exec(R"(CREATE FUNCTION public.order_count(w int) RETURNS bigint LANGUAGE sql STABLE
                          AS $$ SELECT count(*) FROM public.orders WHERE writer = w $$)");
    // One whose body uses what neither server has (created with check_function_bodies off, as
    // pg_restore does): created on the target all the same.
    fx.source().exec(R"(SET check_function_bodies = off;
                        CREATE FUNCTION public.uses_elsewhere() RETURNS bigint LANGUAGE sql
                          AS $$ SELECT count(*) FROM elsewhere.users $$;
                        RESET check_function_bodies)");
    REQUIRE(fx.start_and_wait_streaming());
    fx.source().exec(R"(CREATE PROCEDURE public.credit(a int, amount bigint) LANGUAGE sql
                          AS $$ UPDATE public.accounts SET balance = balance + amount WHERE id = a $$;
                        CREATE VIEW public.busy_accounts WITH (security_barrier) AS
                          SELECT id, balance, public.order_count(id) AS orders FROM public.accounts;
                        CREATE VIEW "Rich Accounts" AS SELECT id FROM public.busy_accounts WHERE balance > 100)");
    const std::string objects =
        "SELECT coalesce(string_agg(d, E'\n' ORDER BY d), '') FROM ("
        " SELECT p.oid::regprocedure::text || ' ' || pg_get_functiondef(p.oid) d FROM pg_proc p"
        "  WHERE p.pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT c.oid::regclass::text || ' ' || coalesce(c.reloptions::text, '') || pg_get_viewdef(c.oid)"
        "  FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace) x";
    const auto on_source = fx.source().value(objects);
    CHECK(wait_for([&] { return fx.target().value(objects) == on_source; }, 30s));
    CHECK(fx.target().value(objects) == on_source);
    auto url = fx.daemon().control_url();
    CHECK(wait_for([&] { return http("GET", url + "/v1/status").find("\"schema_differences\":[]") != std::string::npos; },
                   20s));
    // They work there: the view calls the function on the replicated rows.
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (3, 1), (3, 2); UPDATE accounts SET balance = 500 WHERE id = 3");
    REQUIRE(fx.converged(k_tables, 30s));
    CHECK(fx.target().value("SELECT orders FROM busy_accounts WHERE id = 3") == "2");
    CHECK(fx.target().value("SELECT count(*) FROM \"Rich Accounts\"") == "1");
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("view public.busy_accounts created on the target") != std::string::npos);
    // A deploy changes a function's body and adds a column to a view: replaced on the target.
    fx.source().exec(R"(CREATE OR REPLACE FUNCTION public.order_count(w int) RETURNS bigint LANGUAGE sql STABLE
                          AS $$ SELECT count(*) FROM public.orders WHERE writer = w AND seq > 1 $$;
                        CREATE OR REPLACE VIEW public.busy_accounts WITH (security_barrier) AS
                          SELECT id, balance, public.order_count(id) AS orders, balance > 0 AS positive FROM public.accounts)");
    const auto changed = fx.source().value(objects);
    REQUIRE(changed != on_source);
    CHECK(wait_for([&] { return fx.target().value(objects) == changed; }, 30s));
    CHECK(fx.target().value(objects) == changed);
    CHECK(fx.target().value("SELECT orders || ' ' || positive FROM busy_accounts WHERE id = 3") == "1 true");
    CHECK(wait_for([&] { return http("GET", url + "/v1/status").find("\"schema_differences\":[]") != std::string::npos; },
                   20s));
}

TEST_CASE("row-level security and the policies of the source's tables are made the same on the target, a cutover waits for them",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30, verify: counts}"));
    seed(fx);
    // The application's role sees and adds its own orders only (writer 1), as on a managed
    // source whose API relies on row-level security; it has grants on both servers.
    fx.source().exec(R"(CREATE ROLE app_user; GRANT SELECT, INSERT ON orders TO app_user;
                        ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
                        CREATE POLICY own_orders ON orders FOR SELECT TO app_user USING (writer = 1);
                        CREATE POLICY "Add own" ON orders FOR INSERT TO app_user WITH CHECK (writer = 1))");
    fx.target().exec("CREATE ROLE app_user; GRANT SELECT, INSERT ON orders TO app_user");
    // Everything row-level security is made of, on one server: the switches and every policy.
    const std::string security =
        "SELECT string_agg(s, E'\n' ORDER BY s) FROM ("
        " SELECT c.relname || ' ' || c.relrowsecurity || ' ' || c.relforcerowsecurity FROM pg_class c"
        "  WHERE c.oid IN ('orders'::regclass, 'accounts'::regclass)"
        " UNION ALL SELECT concat_ws(' ', tablename, policyname, permissive, roles::text, cmd, qual, with_check)"
        "  FROM pg_policies WHERE schemaname = 'public') x(s)";
    // What app_user sees of orders on a server.
    auto seen_by_app = [](TestCluster& server) {
        auto c = server.connect();
        c.exec("SET ROLE app_user");
        return c.exec("SELECT count(*) || ' of ' || (SELECT count(*) FROM orders WHERE writer = 1) FROM orders").str(0, 0);
    };
    REQUIRE(fx.start_and_wait_streaming());
    fx.source().exec("INSERT INTO orders (writer, seq) SELECT g % 3, g FROM generate_series(1, 30) g");
    REQUIRE(seen_by_app(fx.source()) == "10 of 10");
    REQUIRE(fx.converged(k_tables, 30s));
    const auto on_source = fx.source().value(security);
    CHECK(wait_for([&] { return fx.target().value(security) == on_source; }, 30s));
    CHECK(fx.target().value(security) == on_source);
    CHECK(seen_by_app(fx.target()) == "10 of 10");
    {
        auto c = fx.target().connect();
        c.exec("SET ROLE app_user");
        CHECK_THROWS_WITH(c.exec("INSERT INTO orders (id, writer, seq) VALUES (100000, 2, 99)"),
                          Catch::Contains("new row violates row-level security policy"));
    }
    auto url = fx.daemon().control_url();
    auto status = [&] { return http("GET", url + "/v1/status"); };
    CHECK(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));

    // A policy for a role the target lacks: named, and a cutover is refused until it exists.
    fx.source().exec(R"(CREATE ROLE auditor;
                        ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
                        CREATE POLICY audit ON accounts FOR SELECT TO auditor USING (true))");
    REQUIRE(wait_for([&] { return status().find("row-level security (on the source: enabled, 1 policy; on the target: off) "
                                                 "of public.accounts differs between the servers") != std::string::npos; },
                     30s));
    CHECK(status().find("its policies name role(s) the target lacks (pgshift copies no roles or passwords): create "
                        "auditor there, then pgshift makes it the same (schema: copy)") != std::string::npos);
    auto r = run_command({"/usr/bin/curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url + "/v1/cutover"});
    INFO(r.output);
    CHECK(r.output.find("\n412") != std::string::npos);
    CHECK(r.output.find("row-level security (on the source: enabled, 1 policy; on the target: off) of public.accounts") !=
          std::string::npos);
    CHECK(fx.target().value("SELECT relrowsecurity FROM pg_class WHERE oid = 'accounts'::regclass") == "f");
    fx.target().exec("CREATE ROLE auditor");

    // A deploy changes the policies: one dropped, one altered, the table's owner subjected too.
    fx.source().exec(R"(DROP POLICY "Add own" ON orders;
                        ALTER POLICY own_orders ON orders USING (writer IN (1, 2));
                        ALTER TABLE orders FORCE ROW LEVEL SECURITY)");
    fx.source().exec("INSERT INTO orders (writer, seq) VALUES (2, 100), (0, 101)");
    const auto changed = fx.source().value(security);
    REQUIRE(changed != on_source);
    CHECK(wait_for([&] { return fx.target().value(security) == changed; }, 30s));
    CHECK(fx.target().value(security) == changed);
    REQUIRE(fx.converged(k_tables, 30s));
    CHECK(seen_by_app(fx.target()) == seen_by_app(fx.source()));
    CHECK(seen_by_app(fx.target()) == "21 of 10");
    CHECK(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("row-level security (on the source: enabled, 2 policies; on the target: off) of public.orders: "
                   "making it the same on the target (schema: copy)") != std::string::npos);
    CHECK(log.find("of public.orders made the same on the target") != std::string::npos);
    // Then the switch goes through.
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    CHECK(code == 0);
}

TEST_CASE("values added to an enum type on the source are added on the target in the same order",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30}"));
    seed(fx);
    const char* schema = "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN mood_d AS mood; "
                         "CREATE TABLE moods (id int PRIMARY KEY, m mood, ms mood[], md mood_d)";
    fx.source().exec(schema);
    fx.target().exec(schema);
    REQUIRE(fx.start_and_wait_streaming());
    const std::string labels = "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum "
                               "WHERE enumtypid = 'mood'::regtype";
    const std::vector<std::string> tables{"public.moods"};
    // A deploy adds a value and writes it at once, in a column, an array and a domain: apply
    // meets it before the follower's next look, and the value is added then.
    fx.source().exec("ALTER TYPE mood ADD VALUE 'happy' AFTER 'ok'");
    fx.source().exec("INSERT INTO moods VALUES (1, 'happy', '{happy,sad}', 'happy'), (2, 'ok', '{}', 'sad')");
    REQUIRE(fx.converged(tables, 30s));
    // Values added before others, not written yet: the follower adds them where the source has them.
    fx.source().exec("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'; ALTER TYPE mood ADD VALUE 'angry' BEFORE 'sad'");
    const auto on_source = fx.source().value(labels);
    REQUIRE(on_source == "angry,sad,meh,ok,happy");
    CHECK(wait_for([&] { return fx.target().value(labels) == on_source; }, 30s));
    CHECK(fx.target().value(labels) == on_source);
    fx.source().exec("INSERT INTO moods VALUES (3, 'angry', '{meh,angry}', 'meh')");
    REQUIRE(fx.converged(tables, 30s));
    CHECK(fx.target().value("SELECT string_agg(id::text, ',' ORDER BY m, id) FROM moods") ==
          fx.source().value("SELECT string_agg(id::text, ',' ORDER BY m, id) FROM moods"));
    auto url = fx.daemon().control_url();
    auto status = [&] { return http("GET", url + "/v1/status"); };
    CHECK(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));
    // A value only the target has (renamed on the source?): which is which is the operator's.
    fx.target().exec("ALTER TYPE mood ADD VALUE 'target_only'");
    fx.source().exec("ALTER TYPE mood ADD VALUE 'calm'");
    CHECK(wait_for([&] { return status().find("value 'calm' of enum type public.mood exists on the source but not on "
                                              "the target: the target's type also has 'target_only', which the "
                                              "source's no longer has") != std::string::npos; },
                   30s));
    CHECK(fx.target().value(labels) == "angry,sad,meh,ok,happy,target_only");
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("the target refused a value of an enum type that the source has: adding value 'happy' of enum "
                   "type public.mood on the target (schema: copy), then applying again") != std::string::npos);
    CHECK(log.find("apply stopped") == std::string::npos);
}

TEST_CASE("triggers made, changed and dropped on the source are made the same on the target", "[integration][cutover]")
{
    ReplicationFixture fx(options("{timeout_seconds: 30}"));
    seed(fx);
    // The trigger function exists on the source only: the follower creates it before the triggers.
    fx.source().exec(R"(CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql
                          AS $$ BEGIN NEW.note := coalesce(NEW.note, '') || ' touched'; RETURN NEW; END $$)");
    REQUIRE(fx.start_and_wait_streaming());
    const std::string triggers =
        "SELECT coalesce(string_agg(tgrelid::regclass || ' ' || tgenabled::text || ' ' || pg_get_triggerdef(oid), E'\n' "
        "ORDER BY tgrelid::regclass::text, tgname), '') FROM pg_trigger WHERE NOT tgisinternal";
    fx.source().exec(R"(CREATE TRIGGER orders_touch BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION public.touch();
                        CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION public.touch();
                        ALTER TABLE accounts DISABLE TRIGGER accounts_touch)");
    auto on_source = fx.source().value(triggers);
    CHECK(wait_for([&] { return fx.target().value(triggers) == on_source; }, 30s));
    CHECK(fx.target().value(triggers) == on_source);
    // It fires on the source only: the target gets the row as the source wrote it.
    fx.source().exec("INSERT INTO orders (writer, seq, note) VALUES (5, 1, 'row')");
    REQUIRE(fx.converged(k_tables, 30s));
    CHECK(fx.target().value("SELECT note FROM orders WHERE writer = 5") == "row touched");
    // A deploy changes one and drops the other.
    fx.source().exec(R"(DROP TRIGGER orders_touch ON orders;
                        CREATE TRIGGER orders_touch BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION public.touch();
                        DROP TRIGGER accounts_touch ON accounts)");
    // The changed one is made again; the dropped one is listed with its DROP (pgshift cannot
    // tell it from one made on the target on purpose) and dropped by hand.
    auto url = fx.daemon().control_url();
    auto status = [&] { return http("GET", url + "/v1/status"); };
    CHECK(wait_for([&] { return status().find("trigger accounts_touch of public.accounts is on the target but not on "
                                              "the source: after a cutover it would fire there: pgshift cannot tell "
                                              "one the source dropped from one made on the target on purpose, and "
                                              "drops neither: if the source dropped it, drop it there: DROP TRIGGER "
                                              "IF EXISTS \\\"accounts_touch\\\" ON public.accounts") != std::string::npos; },
                   30s));
    fx.target().exec("DROP TRIGGER accounts_touch ON accounts");
    on_source = fx.source().value(triggers);
    CHECK(wait_for([&] { return fx.target().value(triggers) == on_source; }, 30s));
    CHECK(fx.target().value(triggers) == on_source);
    CHECK(wait_for([&] { return status().find("\"schema_differences\":[]") != std::string::npos; }, 20s));
    // And the new primary then behaves as the old one did.
    auto [code, json] = operation(fx.daemon(), "cutover");
    INFO(json);
    REQUIRE(code == 0);
    fx.target().exec("INSERT INTO orders (writer, seq, note) VALUES (6, 1, 'after')");
    CHECK(fx.target().value("SELECT note FROM orders WHERE writer = 6") == "after touched");
    std::ifstream in(fx.daemon().log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(log);
    CHECK(log.find("definition of trigger orders_touch of public.orders: building it on the target") !=
          std::string::npos);
}

TEST_CASE("loop prevention: a transaction tagged with one of the migration's own origins is not streamed back",
          "[integration][cutover]")
{
    ReplicationFixture fx(options("{}"));
    seed(fx);
    REQUIRE(fx.start_and_wait_streaming());
    // What the reverse stream's apply leaves on the source: writes under origin pgshift_co_rev_w0.
    fx.source().exec("SELECT pg_replication_origin_create('pgshift_co_rev_w0')");
    auto tagged = fx.source().connect();
    tagged.exec("SELECT pg_replication_origin_session_setup('pgshift_co_rev_w0')");
    tagged.exec("INSERT INTO orders (writer, seq, note) VALUES (7, 1, 'applied by pgshift: must not go back')");
    tagged.exec("SELECT pg_replication_origin_session_reset()");
    // A foreign origin (another replication feeding the source) is replicated as usual.
    fx.source().exec("SELECT pg_replication_origin_create('someone_else')");
    tagged.exec("SELECT pg_replication_origin_session_setup('someone_else')");
    tagged.exec("INSERT INTO orders (writer, seq, note) VALUES (7, 2, 'from another replication')");
    tagged.exec("SELECT pg_replication_origin_session_reset()");
    fx.source().exec("INSERT INTO orders (writer, seq, note) VALUES (7, 3, 'an application write')");
    REQUIRE(wait_for([&] { return fx.target().value("SELECT count(*) FROM orders WHERE seq = 3 AND writer = 7") == "1"; },
                     20s));
    CHECK(fx.target().value("SELECT count(*) FROM orders WHERE writer = 7 AND seq = 1") == "0");
    CHECK(fx.target().value("SELECT count(*) FROM orders WHERE writer = 7 AND seq = 2") == "1");
}
