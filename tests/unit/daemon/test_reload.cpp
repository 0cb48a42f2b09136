// SIGHUP reloads (plan_reload, apply_reload) and the watchdog's verdict (Liveness): pure logic.
#include "pgshift/daemon/reload.hpp"
#include "pgshift/daemon/run.hpp"
#include "pgshift/daemon/state.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>

using namespace pgshift;
using daemon::apply_reload;
using daemon::plan_reload;

namespace {

config::Config load(const std::string& extra)
{
    const std::string yaml = "name: shop\n"
                             "source: {conninfo: \"host=old dbname=shop user=m password=s3cret-old\"}\n"
                             "target: {conninfo: \"host=new dbname=shop user=m\"}\n" +
                             extra;
    return config::load_from_string(yaml, "test.yaml",
                                     [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
}

bool contains(const std::vector<std::string>& lines, const std::string& line)
{
    return std::find(lines.begin(), lines.end(), line) != lines.end();
}

std::string joined(const std::vector<std::string>& lines)
{
    std::string out;
    for (const auto& l : lines)
        out += l + "\n";
    return out;
}

} // namespace

TEST_CASE("reload: reloadable changes are applied and logged, the others named with the value kept",
          "[daemon][reload]")
{
    auto live = load("apply: {workers: 4}\nlog: {level: info}\n");
    auto fresh = load("apply: {workers: 8, on_missing_row: skip}\nlog: {level: debug, format: json}\n"
                      "cutover: {max_lag_seconds: 2.5}\n");
    auto plan = plan_reload(live, fresh);
    INFO("applied:\n" << joined(plan.applied) << "kept:\n" << joined(plan.kept));
    CHECK(contains(plan.applied, "log.level info -> debug"));
    CHECK(contains(plan.applied, "log.format text -> json"));
    CHECK(contains(plan.applied, "cutover.max_lag_seconds 10 -> 2.5"));
    CHECK(contains(plan.applied, "apply.on_missing_row error -> skip (from the next streaming session, e.g. after "
                                 "`pgshift resume`; the running one keeps its value)"));
    CHECK(plan.kept == std::vector<std::string>{"apply.workers changed: needs a restart, keeping 4"});
    CHECK(plan.keys.size() == plan.applied.size());

    // Only the planned keys are copied: what differs afterwards needs a restart.
    auto next = live;
    apply_reload(plan.keys, next, fresh);
    CHECK(next.log.level == config::LogLevel::debug);
    CHECK(next.log.format == config::LogFormat::json);
    CHECK(next.apply.on_missing_row == config::MissingRowPolicy::skip);
    CHECK(next.cutover.max_lag_seconds == 2.5);
    CHECK(next.apply.workers == 4);
    for (const auto& c : config::diff(next, fresh)) {
        INFO("still different: " << c.key);
        CHECK_FALSE(c.reloadable);
    }
}

TEST_CASE("reload: nothing changed, nothing to do", "[daemon][reload]")
{
    auto live = load("log: {level: warn}\n");
    auto plan = plan_reload(live, live);
    CHECK(plan.keys.empty());
    CHECK(plan.applied.empty());
    CHECK(plan.kept.empty());
}

TEST_CASE("reload: secrets never reach the log lines", "[daemon][reload]")
{
    auto live = load("cutover: {fence: command, fence_command: \"curl -u admin:hunter2 http://lb/pause\"}\n");
    auto fresh = config::load_from_string(
        "name: shop\nsource: {conninfo: \"host=old dbname=shop user=m password=s3cret-new\"}\n"
        "target: {conninfo: \"host=new dbname=shop user=m\"}\n"
        "cutover: {fence: command, fence_command: \"curl -u admin:swordfish http://lb/pause\"}\n",
        "test.yaml", [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
    auto plan = plan_reload(live, fresh);
    const auto all = joined(plan.applied) + joined(plan.kept);
    INFO(all);
    CHECK(contains(plan.applied, "cutover.fence_command changed (not logged: it may hold a secret)"));
    CHECK(contains(plan.kept, "source.conninfo changed: needs a restart, keeping the running value (not logged: it "
                              "may hold a secret)"));
    for (const char* secret : {"s3cret", "hunter2", "swordfish"})
        CHECK(all.find(secret) == std::string::npos);
}

TEST_CASE("reload: a token dropped together with a new listen address stays until the restart",
          "[daemon][reload]")
{
    auto live = load("control: {listen: \"0.0.0.0:8187\", token_file: /etc/pgshift/token}\n");
    auto fresh = load("control: {listen: \"127.0.0.1:8187\"}\n");
    auto plan = plan_reload(live, fresh);
    INFO("applied:\n" << joined(plan.applied) << "kept:\n" << joined(plan.kept));
    CHECK(plan.keys.empty());
    CHECK(plan.kept.size() == 2);
    // A new token file alone is applied.
    auto rotated = load("control: {listen: \"0.0.0.0:8187\", token_file: /etc/pgshift/token2}\n");
    auto plan2 = plan_reload(live, rotated);
    CHECK(plan2.keys == std::vector<std::string>{"control.token_file"});
    CHECK(contains(plan2.applied, "control.token_file \"/etc/pgshift/token\" -> \"/etc/pgshift/token2\""));
}

TEST_CASE("liveness: apply is healthy while it commits, idles, holds or runs a statement", "[daemon][watchdog]")
{
    daemon::Liveness l;
    daemon::SessionSample s;
    s.reader_running = true;
    s.apply_running = true;
    s.pushed_seq = 10;
    s.applied_seq = 10;
    std::int64_t t = 1'000'000;
    CHECK(l.check(s, t).empty());
    // Idle: everything queued was applied, for a long time.
    CHECK(l.check(s, t += 60'000).empty());
    // Work waits and a statement runs on the target (a long batch, a lock): not a wedge.
    s.pushed_seq = 20;
    s.statement_on_target = true;
    CHECK(l.check(s, t += 60'000).empty());
    // Paused: not a wedge either.
    s.statement_on_target = false;
    s.apply_on_hold = true;
    CHECK(l.check(s, t += 60'000).empty());
    // Committing: fine.
    s.apply_on_hold = false;
    s.applied_seq = 12;
    s.batches_committed = 1;
    CHECK(l.check(s, t += 1000).empty());
    // Work waits, nothing runs, nothing commits: wedged once the stall time has passed.
    CHECK(l.check(s, t += daemon::Liveness::k_stall_ms - 1000).empty());
    auto why = l.check(s, t += 2000);
    CHECK(why.find("apply has committed nothing for 21 s while 8 transaction(s) wait") != std::string::npos);
    // It commits again: healthy again.
    s.applied_seq = 13;
    CHECK(l.check(s, t += 1000).empty());
}

TEST_CASE("liveness: the reader is judged only when the monitor can see its replies", "[daemon][watchdog]")
{
    daemon::Liveness l;
    daemon::SessionSample s;
    s.reader_running = true;
    std::int64_t t = 1'000'000;
    s.reply_sampled_ms = t;
    s.reply_changed_ms = t;
    CHECK(l.check(s, t).empty());
    // Idle source, replies keep arriving: fine.
    for (int i = 0; i < 30; ++i) {
        t += 1000;
        s.reply_sampled_ms = t;
        s.reply_changed_ms = t;
        CHECK(l.check(s, t).empty());
    }
    // WAL arrives but the walsender took no reply (busy sending): fine.
    for (int i = 0; i < 30; ++i) {
        t += 1000;
        s.reply_sampled_ms = t;
        s.received += 100;
        CHECK(l.check(s, t).empty());
    }
    // Neither WAL nor replies while the monitor looks: wedged.
    std::string why;
    for (int i = 0; i < 25; ++i) {
        t += 1000;
        s.reply_sampled_ms = t;
        why = l.check(s, t);
    }
    CHECK(why.find("the stream is stuck: nothing received from the upstream, and none of the reader's status "
                   "replies seen there, for") != std::string::npos);
    // The monitor cannot look any more (source unreachable): not judged.
    t += daemon::Liveness::k_sample_fresh_ms + 1000;
    CHECK(l.check(s, t).empty());
    // A new session's reader starts afresh.
    s.reader_running = false;
    CHECK(l.check(s, t += 1000).empty());
    s.reader_running = true;
    s.reply_sampled_ms = t;
    CHECK(l.check(s, t += 1000).empty());
}
