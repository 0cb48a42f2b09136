// Integration: verify (SPEC section 5) compares source and target at one common LSN while a write
// load keeps streaming, and names exactly what differs.
#include "harness/load_threads.hpp"
#include "harness/replication_fixture.hpp"
#include "harness/type_schema.hpp"

#include "pgshift/common/lsn.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <regex>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

/// A row or more in every table of the type-coverage schema, with the values that are hard to
/// render identically (NaN, -0, infinities, arrays of composites, unicode, time zones).
const char* const k_seed = R"sql(
INSERT INTO t_numbers VALUES (1, 2147483647, 9223372036854775807, 32767, 'NaN', 12345678901234.123456, 'Infinity', 'NaN'),
  (2, NULL, NULL, NULL, '-Infinity', -0.000001, '-0', 3.4e38), (3, 0, 0, 0, 2.50, 0, 0.1, 0.1);
INSERT INTO t_text VALUES (1, E'quote '' backslash \\ tab \t nl \n', 'vc', 'ch', '\x00ff'), (2, '😀 \N', NULL, NULL, NULL);
INSERT INTO t_json VALUES (1, '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2]}'), (2, 'null', 'null');
INSERT INTO t_arrays VALUES (1, '{a,"b c",NULL}', '{1,2}', '{{1,2},{3,4}}', '{1.5,NaN}', ARRAY['{"x":1}'::jsonb], '{2024-01-01}');
INSERT INTO t_time VALUES (1, '2024-03-10 02:30:00+01', '2024-03-10 02:30:00', '2024-02-29', '1 year 2 mons -3 days 04:05:06.789', '23:59:59.999999', '12:00+05:30');
INSERT INTO t_misc VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', true, B'10101');
INSERT INTO t_user_types VALUES (1, 'very "happy"', 5, ROW('Main St', 12345, '{a,b}'), ARRAY[ROW('x', 1, NULL)::address], '{sad,ok}');
INSERT INTO t_ranges VALUES (1, '[1,10)', '[2024-01-01 00:00+00,2024-01-02 00:00+00)', '(1.5,2.5]', '[2024-01-01,2024-02-01)', '{[1,3), [5,7)}');
INSERT INTO t_generated (id, a, b) VALUES (1, 2, 3);
INSERT INTO t_composite_pk VALUES ('eu', 1, '2024-01-01', 'x'), ('us', 1, '2024-01-01', 'y');
INSERT INTO t_pk_update VALUES (1, 'one');
INSERT INTO t_toast VALUES (1, 0, repeat(md5('a'), 400), repeat(md5('b'), 400), 'n');
INSERT INTO t_full VALUES (1, '{"a": 1}', '(1,2)', 'full'), (1, '{"a": 1}', '(1,2)', 'full');
INSERT INTO t_trunc_single VALUES (1, 'a');
INSERT INTO t_trunc_a (v) VALUES ('a');
INSERT INTO t_trunc_b (v) VALUES ('b');
INSERT INTO t_parent VALUES (1, 'p');
INSERT INTO t_child VALUES (1, 1, 'c');
INSERT INTO t_tx VALUES (1, 'tx');
INSERT INTO "My Schema"."select" VALUES (1, 'from', 'user', 7, 'Ünïcødé');
INSERT INTO "My Schema"."Table With Spaces" VALUES ('k 1', 1, 'desc');
INSERT INTO load_a SELECT g, g, 'seed' FROM generate_series(0, 999) g;
INSERT INTO load_b SELECT g % 20, g / 20, 'b', g FROM generate_series(0, 199) g;
INSERT INTO load_u SELECT g, g, g FROM generate_series(0, 99) g;
)sql";

/// Writers that keep the stream busy until stopped: updates, inserts and deletes over keyed and
/// keyless tables, including types whose text must render the same on both sides.
class Load {
public:
    explicit Load(std::string conninfo)
        : conninfo_(std::move(conninfo)), threads_(2, [this](int k, const auto& stop) { run(k, stop); })
    {
    }
    void stop() { threads_.stop(); }
    [[nodiscard]] int committed() const { return committed_.load(); }
    [[nodiscard]] std::string error() const { return threads_.errors(); }

private:
    void run(int thread_no, const std::atomic<bool>& stop)
    {
        pgshift::pg::Connection c(conninfo_);
        std::mt19937 rng(static_cast<unsigned>(thread_no + 7));
        auto pick = [&](int lo, int hi) { return std::to_string(std::uniform_int_distribution<int>(lo, hi)(rng)); };
        for (int n = 0; !stop; ++n) {
            c.exec("BEGIN");
            c.exec_params("UPDATE load_a SET v = v + 1, s = $2 WHERE id = $1", {pick(0, 999), "u" + std::to_string(n)});
            c.exec_params("INSERT INTO load_log VALUES ($1, $2, 'n')", {std::to_string(thread_no), std::to_string(n)});
            c.exec_params("UPDATE t_numbers SET n = n + 1, f8 = f8 * -1 WHERE id = 3", {});
            c.exec_params("INSERT INTO load_b VALUES ($1, $2, 'x', $3) ON CONFLICT (k1, k2) DO UPDATE SET n = "
                          "load_b.n + 1",
                          {pick(0, 19), pick(0, 50), pick(-5, 5)});
            if (n % 5 == 0)
                c.exec_params("DELETE FROM load_b WHERE k1 = $1 AND k2 = $2", {pick(0, 19), pick(0, 50)});
            c.exec_params("UPDATE t_toast SET counter = counter + 1 WHERE id = 1", {});
            c.exec("COMMIT");
            ++committed_;
            std::this_thread::sleep_for(2ms);
        }
    }

    std::string conninfo_;
    std::atomic<int> committed_{0};
    LoadThreads threads_; // last: its threads stop before the members they use go
};

/// `pgshift verify --wait`: exit code and the final JSON document (the last line).
std::pair<int, std::string> verify_wait(ReplicationFixture& fx)
{
    auto r = run_command({pgshift_binary().string(), "verify", "--wait", "--config", fx.daemon().config_path().string()});
    auto out = r.output;
    while (!out.empty() && out.back() == '\n')
        out.pop_back();
    auto nl = out.rfind('\n');
    return {r.exit_code, nl == std::string::npos ? out : out.substr(nl + 1)};
}

std::string field(const std::string& json, const std::string& name)
{
    std::smatch m;
    std::regex re("\"" + name + "\":\"([^\"]*)\"");
    return std::regex_search(json, m, re) ? m[1].str() : "";
}

std::size_t count_of(const std::string& hay, const std::string& needle)
{
    std::size_t n = 0;
    for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1))
        ++n;
    return n;
}

} // namespace

TEST_CASE("verify: every table of the type-coverage schema matches at one LSN under a write load, 5 runs of 5",
          "[integration][verify]")
{
    FixtureOptions o;
    o.schema_sql = k_type_schema;
    o.daemon.name = "verify";
    o.daemon.workers = 4;
    ReplicationFixture fx(o);
    REQUIRE(fx.start_and_wait_streaming(30s));
    exec_statements(fx.source(), k_seed);
    REQUIRE(fx.converged(k_type_tables, 60s));

    Load load(fx.source().conninfo());
    std::this_thread::sleep_for(1s);
    int ahead = 0;
    for (int run = 1; run <= 5; ++run) {
        const int before = load.committed();
        auto [code, json] = verify_wait(fx);
        INFO("run " << run << ": " << json);
        CHECK(code == 0);
        CHECK(field(json, "state") == "match");
        CHECK(count_of(json, "\"result\":\"match\"") == k_type_tables.size());
        // The common point was ahead of what apply had applied when verify started: the
        // comparison had to wait for apply and hold it there (no lag-only differences).
        auto at = pgshift::Lsn::parse(field(json, "lsn"));
        auto applied = pgshift::Lsn::parse(field(json, "applied_at_start"));
        REQUIRE(at);
        REQUIRE(applied);
        ahead += *at > *applied;
        CHECK(load.committed() > before); // the load kept writing during the comparison
    }
    WARN("the common point was ahead of apply in " << ahead << " of 5 runs; " << load.committed()
                                                   << " transactions committed by the load");
    CHECK(ahead >= 3);
    load.stop();
    CHECK(load.error().empty());
    REQUIRE(fx.converged(k_type_tables, 60s));
}

TEST_CASE("verify: a changed, a deleted and an added row are named by key, a table without a key by its counts",
          "[integration][verify]")
{
    FixtureOptions o;
    o.schema_sql = "CREATE TABLE items (id int PRIMARY KEY, v text);"
                   "CREATE TABLE pairs (a int, b text, c int, PRIMARY KEY (a, b));"
                   "CREATE TABLE logs (n int, note text); ALTER TABLE logs REPLICA IDENTITY FULL;";
    o.daemon.name = "verifydiff";
    ReplicationFixture fx(o);
    REQUIRE(fx.start_and_wait_streaming(30s));
    fx.source().exec("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5000) g;"
                     "INSERT INTO pairs SELECT g % 50, 'k ' || (g / 50), g FROM generate_series(1, 2000) g;"
                     "INSERT INTO logs SELECT g, 'log' FROM generate_series(1, 300) g");
    REQUIRE(fx.converged({"public.items", "public.pairs", "public.logs"}, 60s));

    auto [code0, json0] = verify_wait(fx);
    INFO(json0);
    REQUIRE(code0 == 0);

    // Behind pgshift's back, on the target only.
    fx.target().exec("UPDATE items SET v = 'changed' WHERE id = 1234;"
                     "DELETE FROM items WHERE id = 777;"
                     "INSERT INTO items VALUES (99999, 'extra');"
                     "UPDATE pairs SET c = -1 WHERE a = 7 AND b = 'k 3';"
                     "INSERT INTO logs VALUES (301, 'extra')");
    auto [code, json] = verify_wait(fx);
    INFO(json);
    CHECK(code == 1);
    CHECK(field(json, "state") == "mismatch");
    CHECK(json.find(R"x({"key":"(1234)","kind":"different"})x") != std::string::npos);
    CHECK(json.find(R"x({"key":"(777)","kind":"missing_on_target"})x") != std::string::npos);
    CHECK(json.find(R"x({"key":"(99999)","kind":"extra_on_target"})x") != std::string::npos);
    CHECK(json.find(R"x({"key":"(7,\"k 3\")","kind":"different"})x") != std::string::npos);
    CHECK(count_of(json, "\"kind\":") == 4); // nothing else
    CHECK(json.find(R"x("table":"public.logs","result":"mismatch","compared_by":"whole table","source_rows":300,"target_rows":301)x") !=
          std::string::npos);
    CHECK(fx.daemon().running());
}
