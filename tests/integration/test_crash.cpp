// Integration: no transaction lost or applied twice across kill -9 and SIGTERM of the daemon under load.
//
// Design notes: four writer threads each commit numbered transactions; every one
// inserts ledger(client, seq) (no primary key, so a replayed transaction shows up as a
// duplicate row instead of a key conflict), bumps one shared account row and upserts
// the client's last_seq. While they run, the main thread kills and restarts the daemon;
// a sampler thread reads the target continuously and checks, in one snapshot, that it
// only ever shows whole transactions (ledger rows == sum of account bumps, each
// client's last_seq == its highest ledger seq, seqs 1..n without holes or repeats). It
// also counts the distinct apply sessions (application_name pgshift_<name>_w<k>) on the
// target, so that "N apply workers" is checked, not assumed; distinct names, because a
// killed daemon's old sessions may linger next to the new ones for a moment.
// Daemon restarts always happen on the main thread (see DaemonProcess).
#include "harness/load_threads.hpp"
#include "harness/replication_fixture.hpp"
#include "harness/target_sampler.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <mutex>
#include <random>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

const char* const k_schema = R"sql(
CREATE TABLE ledger (client int NOT NULL, seq int NOT NULL);
-- No key, so a replay shows as a duplicate; insert-only, so REPLICA IDENTITY FULL costs nothing
-- and lets pgshift publish it (it refuses tables the source could no longer update).
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, txns int NOT NULL DEFAULT 0, touched_by int);
CREATE TABLE client_state (client int PRIMARY KEY, last_seq int NOT NULL, payload text);
INSERT INTO accounts (id, balance) SELECT g, 1000 FROM generate_series(0, 49) g;
)sql";

const std::vector<std::string> k_tables = {"public.ledger", "public.accounts", "public.client_state"};

constexpr int k_writers = 4;

/// Writer threads committing numbered transactions until stopped (LoadThreads joins them).
class WriterPool {
public:
    WriterPool(std::string conninfo, std::chrono::milliseconds pause)
        : conninfo_(std::move(conninfo)), pause_(pause),
          threads_(k_writers, [this](int client, const auto& stop) { run(client, stop); })
    {
    }
    void stop() { threads_.stop(); }
    [[nodiscard]] int committed() const { return committed_; }
    [[nodiscard]] std::string errors() const { return threads_.errors(); }

private:
    void run(int client, const std::atomic<bool>& stop)
    {
        pgshift::pg::Connection conn(conninfo_);
        std::mt19937 rng(static_cast<unsigned>(client * 7919 + 1));
        int seq = 0;
        while (!stop) {
            const int next = seq + 1;
            const auto account = std::to_string(std::uniform_int_distribution<int>(0, 49)(rng));
            const auto amount = std::to_string(std::uniform_int_distribution<int>(-100, 100)(rng));
            try {
                conn.exec("BEGIN");
                conn.exec_params("INSERT INTO ledger VALUES ($1, $2)", {std::to_string(client), std::to_string(next)});
                conn.exec_params("UPDATE accounts SET balance = balance + $2, txns = txns + 1, touched_by = $3 "
                                 "WHERE id = $1",
                                 {account, amount, std::to_string(client)});
                conn.exec_params("INSERT INTO client_state VALUES ($1, $2, $3) ON CONFLICT (client) DO UPDATE "
                                 "SET last_seq = excluded.last_seq, payload = excluded.payload",
                                 {std::to_string(client), std::to_string(next),
                                  "client " + std::to_string(client) + " seq " + std::to_string(next)});
                conn.exec("COMMIT");
                seq = next;
                ++committed_;
            } catch (const pgshift::pg::PgError& e) {
                if (e.sqlstate() != "40P01" && e.sqlstate() != "40001")
                    throw;
                conn.exec("ROLLBACK"); // retried with the same seq
            }
            std::this_thread::sleep_for(pause_);
        }
    }

    std::string conninfo_;
    std::chrono::milliseconds pause_;
    std::atomic<int> committed_{0};
    LoadThreads threads_; // last: its threads stop before the members they use go
};

/// Reads the target every 250 ms and records any snapshot that is not a whole-transaction state.
class AtomicitySampler : public TargetSampler {
public:
    AtomicitySampler(std::string conninfo, const std::string& daemon_name)
        : TargetSampler(std::move(conninfo), daemon_name, 250ms)
    {
        start();
    }
    ~AtomicitySampler() override { stop(); }

private:
    void sample(pgshift::pg::Connection& conn) override
    {
        // One statement, one snapshot.
        const std::string sql = R"sql(
            SELECT (SELECT count(*) FROM ledger),
                   (SELECT coalesce(sum(txns), 0) FROM accounts),
                   (SELECT count(*) FROM client_state c
                     WHERE c.last_seq <> (SELECT coalesce(max(seq), 0) FROM ledger l WHERE l.client = c.client)),
                   (SELECT count(*) FROM (SELECT client FROM ledger GROUP BY client
                                           HAVING count(*) <> max(seq) OR count(DISTINCT seq) <> count(*)) x)
        )sql";
        auto r = conn.exec(sql);
        if (r.get(0, 0) != r.get(0, 1) || r.get(0, 2) != "0" || r.get(0, 3) != "0")
            violation("ledger rows " + r.str(0, 0) + ", account bumps " + r.str(0, 1) +
                      ", clients with last_seq != max(seq) " + r.str(0, 2) + ", clients with holes/repeats " +
                      r.str(0, 3));
    }
};

FixtureOptions crash_options(int workers)
{
    FixtureOptions o;
    o.schema_sql = k_schema;
    o.daemon.name = "crash";
    o.daemon.workers = workers;
    return o;
}

/// Every table identical, the ledger exactly once per committed transaction on both sides.
void check_exactly_once(ReplicationFixture& fx, int committed)
{
    const bool converged = fx.converged(k_tables, 120s);
    REQUIRE(converged);
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    for (const auto& table : k_tables) {
        INFO("table " << table);
        CHECK(table_digest(s, table) == table_digest(t, table));
    }
    const std::string dup_sql = "SELECT client, seq, count(*) FROM ledger GROUP BY 1, 2 HAVING count(*) <> 1";
    auto dups = fx.target().query(dup_sql);
    INFO("first duplicated ledger entry: " << (dups.empty() ? "-" : *dups[0][0] + "/" + *dups[0][1] + " x" + *dups[0][2]));
    CHECK(dups.empty());
    CHECK(fx.source().value("SELECT count(*) FROM ledger") == std::to_string(committed));
    CHECK(fx.target().value("SELECT count(*) FROM ledger") == std::to_string(committed));
    CHECK(fx.target().value("SELECT count(*) FROM ledger l JOIN client_state c USING (client) "
                            "WHERE l.seq > c.last_seq") == "0");
}

} // namespace

TEST_CASE("crash: kill -9 under load loses and duplicates nothing", "[integration][crash]")
{
    const int workers = GENERATE(1, 4);
    DYNAMIC_SECTION("4 writers for 25 s, daemon killed 4 times, " << workers << " apply worker(s)")
    {
        const unsigned seed = std::random_device{}();
        INFO("kill schedule seed " << seed);
        std::mt19937 rng(seed);
        auto ms_between = [&](int lo, int hi) {
            return std::chrono::milliseconds(std::uniform_int_distribution<int>(lo, hi)(rng));
        };

        ReplicationFixture fx(crash_options(workers));
        auto& daemon = fx.daemon();
        REQUIRE(fx.start_and_wait_streaming(30s));

        const auto writers_end = std::chrono::steady_clock::now() + 25s;
        AtomicitySampler sampler(fx.target().conninfo(), daemon.options().name);
        WriterPool writers(fx.source().conninfo(), 2ms);

        for (int kill_no = 1; kill_no <= 4; ++kill_no) {
            std::this_thread::sleep_for(ms_between(1000, 4000));
            INFO("before kill #" << kill_no);
            REQUIRE(daemon.running()); // it must not have died on its own
            daemon.kill(SIGKILL);
            std::this_thread::sleep_for(ms_between(0, 500));
            daemon.start();
        }
        std::this_thread::sleep_until(writers_end);
        writers.stop();
        INFO("writer errors: " << writers.errors());
        CHECK(writers.errors().empty());
        const int committed = writers.committed();
        CHECK(committed > 1000);

        // The last restart happens with nothing in flight.
        REQUIRE(daemon.running());
        daemon.kill(SIGKILL);
        daemon.start();

        check_exactly_once(fx, committed);
        sampler.stop();
        INFO("atomicity violations seen on the target:\n" << sampler.violations());
        CHECK(sampler.violations().empty());
        CHECK(sampler.samples() > 20);
        // The daemon really ran `workers` apply connections at once.
        INFO("distinct apply sessions seen at once on the target: " << sampler.max_apply_sessions());
        CHECK(sampler.max_apply_sessions() == workers);
        CHECK(daemon.running());
        CHECK(daemon.starts() == 6);
    }
}

TEST_CASE("crash: SIGTERM under load exits 0 within 30 s and resumes", "[integration][crash]")
{
    ReplicationFixture fx(crash_options(1));
    auto& daemon = fx.daemon();
    REQUIRE(fx.start_and_wait_streaming(30s));

    AtomicitySampler sampler(fx.target().conninfo(), daemon.options().name);
    WriterPool writers(fx.source().conninfo(), 2ms);
    std::this_thread::sleep_for(4s);
    REQUIRE(daemon.running());

    const auto before = std::chrono::steady_clock::now();
    const auto code = daemon.terminate(30s);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - before);
    INFO("SIGTERM to exit took " << took.count() << " ms");
    REQUIRE(code.has_value()); // nullopt: still running after 30 s (then SIGKILLed)
    CHECK(*code == 0);

    // Writes continue while the daemon is down, then it resumes on its own.
    std::this_thread::sleep_for(2s);
    daemon.start();
    REQUIRE(wait_for_streaming(fx.source(), daemon.slot_name(), 30s, &daemon));
    std::this_thread::sleep_for(4s);
    writers.stop();
    INFO("writer errors: " << writers.errors());
    CHECK(writers.errors().empty());
    const int committed = writers.committed();
    CHECK(committed > 200);

    check_exactly_once(fx, committed);
    sampler.stop();
    INFO("atomicity violations seen on the target:\n" << sampler.violations());
    CHECK(sampler.violations().empty());
    CHECK(sampler.max_apply_sessions() == 1);

    // A second graceful stop with nothing in flight is clean too.
    const auto idle_code = daemon.terminate(30s);
    REQUIRE(idle_code.has_value());
    CHECK(*idle_code == 0);
}
