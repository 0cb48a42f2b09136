// Integration: SIGHUP reloads the configuration of a running daemon without interrupting replication.
//
// Design notes: writer threads commit numbered transactions into a keyless ledger (REPLICA
// IDENTITY FULL, so a replayed transaction shows as a duplicate row instead of a key conflict)
// and upsert each client's last_seq, while the main thread rewrites the configuration file and
// sends SIGHUP. Replication is "not interrupted" when the slot keeps the same walsender (one
// session throughout: no reconnect, no restart) and every committed transaction arrives exactly
// once. The log level is checked in the daemon's log: debug lines ("confirmed flush ...") appear
// after a reload to debug and stop after a reload to info.
#include "harness/load_threads.hpp"
#include "harness/replication_fixture.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace pgshift::test;
using namespace std::chrono_literals;

namespace {

const char* const k_schema = R"sql(
CREATE TABLE ledger (client int NOT NULL, seq int NOT NULL);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE client_state (client int PRIMARY KEY, last_seq int NOT NULL);
)sql";

/// Writer threads committing numbered transactions until stopped (LoadThreads joins them).
class Writers {
public:
    Writers(std::string conninfo, int count)
        : conninfo_(std::move(conninfo)), threads_(count, [this](int client, const auto& stop) { run(client, stop); })
    {
    }
    void stop() { threads_.stop(); }
    [[nodiscard]] int committed() const { return committed_; }
    [[nodiscard]] std::string errors() const { return threads_.errors(); }

private:
    void run(int client, const std::atomic<bool>& stop)
    {
        pgshift::pg::Connection conn(conninfo_);
        for (int seq = 1; !stop; ++seq) {
            conn.exec("BEGIN");
            conn.exec_params("INSERT INTO ledger VALUES ($1, $2)", {std::to_string(client), std::to_string(seq)});
            conn.exec_params("INSERT INTO client_state VALUES ($1, $2) ON CONFLICT (client) DO UPDATE "
                             "SET last_seq = excluded.last_seq",
                             {std::to_string(client), std::to_string(seq)});
            conn.exec("COMMIT");
            ++committed_;
            std::this_thread::sleep_for(3ms);
        }
    }

    std::string conninfo_;
    std::atomic<int> committed_{0};
    LoadThreads threads_; // last: its threads stop before the members they use go
};

std::string read_file(const std::filesystem::path& path)
{
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// The daemon's log from byte `offset` on.
std::string log_since(DaemonProcess& daemon, std::size_t offset)
{
    auto all = read_file(daemon.log_path());
    return offset < all.size() ? all.substr(offset) : std::string();
}

std::size_t log_size(DaemonProcess& daemon) { return read_file(daemon.log_path()).size(); }

/// Polls the log from `offset` until it holds `needle`.
bool wait_for_log(DaemonProcess& daemon, std::size_t offset, const std::string& needle,
                  std::chrono::milliseconds timeout = 10s)
{
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        if (log_since(daemon, offset).find(needle) != std::string::npos)
            return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

/// Lines of `text` at debug level (text format: "<date> <time> debug [tid] ...").
int debug_lines(const std::string& text)
{
    int n = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.find(" debug ") != std::string::npos && line.find(" debug ") < 30)
            ++n;
    return n;
}

void write_config(DaemonProcess& daemon, const std::string& yaml)
{
    std::ofstream out(daemon.config_path(), std::ios::trunc);
    out << yaml;
    REQUIRE(out.good());
}

/// The fixture's configuration with `from` replaced by `to` (which must be in it).
std::string config_with(const DaemonProcess& daemon, const std::string& from, const std::string& to)
{
    auto yaml = daemon_config_yaml(daemon.options());
    auto at = yaml.find(from);
    REQUIRE(at != std::string::npos);
    return yaml.replace(at, from.size(), to);
}

FixtureOptions reload_options(const std::string& name)
{
    FixtureOptions o;
    o.schema_sql = k_schema;
    o.daemon.name = name;
    o.daemon.workers = 2;
    o.daemon.log_level = "info";
    return o;
}

/// Each committed transaction exactly once on the target: once every client's last transaction
/// arrived (client_state converged), the ledger has one row per committed transaction, no
/// duplicate (a transaction applied twice), and matches the source's.
void check_exactly_once(ReplicationFixture& fx, int committed)
{
    REQUIRE(fx.converged({"public.client_state"}, 120s));
    auto dups = fx.target().query("SELECT client, seq, count(*) FROM ledger GROUP BY 1, 2 HAVING count(*) <> 1");
    INFO("first duplicated ledger entry: " << (dups.empty() ? "-" : *dups[0][0] + "/" + *dups[0][1] + " x" + *dups[0][2]));
    CHECK(dups.empty());
    CHECK(fx.source().value("SELECT count(*) FROM ledger") == std::to_string(committed));
    CHECK(fx.target().value("SELECT count(*) FROM ledger") == std::to_string(committed));
    auto s = fx.source().connect();
    auto t = fx.target().connect();
    CHECK(table_digest(s, "public.ledger") == table_digest(t, "public.ledger"));
}

} // namespace

TEST_CASE("reload: SIGHUP changes the log level under load without interrupting replication", "[integration][reload]")
{
    ReplicationFixture fx(reload_options("reload"));
    auto& daemon = fx.daemon();
    REQUIRE(fx.start_and_wait_streaming(30s));
    const int walsender = slot_active_pid(fx.source(), daemon.slot_name());
    REQUIRE(walsender != 0);

    Writers writers(fx.source().conninfo(), 3);
    std::this_thread::sleep_for(2s);
    const auto info_yaml = daemon_config_yaml(daemon.options());
    const auto debug_yaml = config_with(daemon, "log:\n  level: info", "log:\n  level: debug");
    struct Step {
        const std::string* yaml;
        const char* reloaded;
        bool debug;
    };
    const Step steps[] = {{&debug_yaml, "reloaded: log.level info -> debug", true},
                          {&info_yaml, "reloaded: log.level debug -> info", false},
                          {&debug_yaml, "reloaded: log.level info -> debug", true}};
    for (const auto& step : steps) {
        INFO("reload to " << (step.debug ? "debug" : "info"));
        write_config(daemon, *step.yaml);
        const auto offset = log_size(daemon);
        daemon.kill(SIGHUP);
        REQUIRE(wait_for_log(daemon, offset, step.reloaded));
        REQUIRE(wait_for_log(daemon, offset, "configuration reloaded: 1 change(s) applied, 0 need a restart"));
        const auto summary_at = offset + log_since(daemon, offset).find("configuration reloaded:");
        std::this_thread::sleep_for(2500ms); // under load: the reader logs "confirmed flush" at debug
        const auto after = log_since(daemon, summary_at);
        INFO("log after the reload:\n" << after.substr(0, 2000));
        if (step.debug)
            CHECK(debug_lines(after) > 0);
        else
            CHECK(debug_lines(after) == 0);
        CHECK(daemon.running());
        // Same session throughout: the slot keeps its walsender.
        CHECK(slot_active_pid(fx.source(), daemon.slot_name()) == walsender);
    }
    writers.stop();
    INFO("writer errors: " << writers.errors());
    CHECK(writers.errors().empty());
    const int committed = writers.committed();
    CHECK(committed > 500);
    check_exactly_once(fx, committed);
    CHECK(slot_active_pid(fx.source(), daemon.slot_name()) == walsender);
    const auto log = read_file(daemon.log_path());
    CHECK(log.find("reconnecting in") == std::string::npos);
    CHECK(daemon.starts() == 1);
    const auto code = daemon.terminate(30s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
}

TEST_CASE("reload: a broken file keeps the running configuration, a good one is applied", "[integration][reload]")
{
    ReplicationFixture fx(reload_options("reloadbad"));
    auto& daemon = fx.daemon();
    const auto token_file = fx.work_dir() / "token";
    {
        std::ofstream(token_file) << "s3cret-token\n";
    }
    REQUIRE(fx.start_and_wait_streaming(30s));
    const int walsender = slot_active_pid(fx.source(), daemon.slot_name());
    auto post_resume = [&](const std::string& token) {
        std::vector<std::string> argv = {"/usr/bin/curl", "-s", "--max-time", "5", "-o", "/dev/null",
                                         "-w", "%{http_code}", "-X", "POST"};
        if (!token.empty())
            argv.insert(argv.end(), {"-H", "Authorization: Bearer " + token});
        argv.push_back(daemon.control_url() + "/v1/resume");
        return run_command(argv).output;
    };
    REQUIRE(post_resume("") == "200"); // no token configured yet
    auto rows_arrive = [&](int id) {
        fx.source().exec("INSERT INTO client_state VALUES (" + std::to_string(id) + ", 1)");
        for (int i = 0; i < 100; ++i) {
            if (fx.target().value("SELECT count(*) FROM client_state WHERE client = " + std::to_string(id)) == "1")
                return true;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    };

    // Broken: a wrong type and an unknown key, together with a level change that must not happen.
    auto broken = config_with(daemon, "log:\n  level: info", "log:\n  level: debug\n  colour: yes");
    broken = broken.replace(broken.find("apply:\n  workers: 2"), 19, "apply:\n  workers: many");
    write_config(daemon, broken);
    auto offset = log_size(daemon);
    daemon.kill(SIGHUP);
    REQUIRE(wait_for_log(daemon, offset, "keeping the running configuration, unchanged"));
    std::this_thread::sleep_for(500ms);
    {
        const auto after = log_since(daemon, offset);
        INFO("log after the broken reload:\n" << after);
        CHECK(after.find("reload failed (2 problem(s) above)") != std::string::npos);
        CHECK(after.find("apply.workers") != std::string::npos);
        CHECK(after.find("log.colour") != std::string::npos);
        CHECK(after.find("reloaded:") == std::string::npos);
    }
    CHECK(daemon.running());
    CHECK(rows_arrive(1001));
    std::this_thread::sleep_for(1500ms);
    CHECK(debug_lines(log_since(daemon, offset)) == 0); // still info
    CHECK(slot_active_pid(fx.source(), daemon.slot_name()) == walsender);

    // A token file that cannot be read is a broken reload too.
    write_config(daemon, config_with(daemon, "control:\n", "control:\n  token_file: \"/nonexistent/token\"\n"));
    offset = log_size(daemon);
    daemon.kill(SIGHUP);
    REQUIRE(wait_for_log(daemon, offset, "keeping the running configuration, unchanged"));
    CHECK(log_since(daemon, offset).find("control.token_file") != std::string::npos);
    CHECK(post_resume("") == "200");

    // Good: the level and the token are applied; a change of apply.workers is named, not applied.
    auto good = config_with(daemon, "log:\n  level: info", "log:\n  level: debug");
    good = good.replace(good.find("apply:\n  workers: 2"), 19, "apply:\n  workers: 3");
    good = good.replace(good.find("control:\n"), 9,
                        "control:\n  token_file: " + yaml_quote(token_file.string()) + "\n");
    write_config(daemon, good);
    offset = log_size(daemon);
    daemon.kill(SIGHUP);
    REQUIRE(wait_for_log(daemon, offset, "configuration reloaded: 2 change(s) applied, 1 need a restart"));
    std::this_thread::sleep_for(300ms);
    {
        const auto after = log_since(daemon, offset);
        INFO("log after the good reload:\n" << after);
        CHECK(after.find("reloaded: log.level info -> debug") != std::string::npos);
        CHECK(after.find("reloaded: control.token_file \"\" -> \"" + token_file.string() + "\"") != std::string::npos);
        CHECK(after.find("apply.workers changed: needs a restart, keeping 2") != std::string::npos);
        CHECK(after.find("s3cret-token") == std::string::npos);
    }
    CHECK(post_resume("") == "401");
    CHECK(post_resume("wrong") == "401");
    CHECK(post_resume("s3cret-token") == "200");
    CHECK(rows_arrive(1002));
    CHECK(debug_lines(log_since(daemon, offset)) > 0);
    CHECK(slot_active_pid(fx.source(), daemon.slot_name()) == walsender);
    CHECK(daemon.running());
    const auto code = daemon.terminate(30s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
}
