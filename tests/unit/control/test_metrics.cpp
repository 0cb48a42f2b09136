// render_metrics: the SPEC section 4 metric set, its types and labels, from one snapshot.
#include "sample_snapshot.hpp"

#include "pgshift/control/metrics.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <string>

using pgshift::control::k_states;
using pgshift::control::render_metrics;
using pgshift::control::StatusSnapshot;
using pgshift::control::test::busy_snapshot;

namespace {

/// The exposition parsed just enough for assertions: TYPE per family, value per series.
struct Exposition {
    std::map<std::string, std::string> types; ///< family -> counter|gauge|histogram
    std::map<std::string, std::string> help;
    std::map<std::string, double> samples;    ///< `name{labels}` exactly as printed -> value
    std::string text;

    explicit Exposition(std::string t) : text(std::move(t))
    {
        std::istringstream in(text);
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind("# TYPE ", 0) == 0) {
                auto rest = line.substr(7);
                auto space = rest.find(' ');
                types[rest.substr(0, space)] = rest.substr(space + 1);
            } else if (line.rfind("# HELP ", 0) == 0) {
                auto rest = line.substr(7);
                auto space = rest.find(' ');
                help[rest.substr(0, space)] = rest.substr(space + 1);
            } else if (!line.empty()) {
                auto space = line.rfind(' ');
                samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
            }
        }
    }

    [[nodiscard]] std::optional<double> value(const std::string& series) const
    {
        auto it = samples.find(series);
        if (it == samples.end())
            return std::nullopt;
        return it->second;
    }
};

} // namespace

TEST_CASE("every SPEC section 4 metric is present with its type", "[control][metrics]")
{
    // An idle snapshot: every family must exist even when all values are zero.
    Exposition e(render_metrics(StatusSnapshot{}, "1.2.3"));
    const std::map<std::string, std::string> expected = {
        {"pgshift_build_info", "gauge"},
        {"pgshift_state", "gauge"},
        {"pgshift_direction", "gauge"},
        {"pgshift_paused", "gauge"},
        {"pgshift_lag_bytes", "gauge"},
        {"pgshift_lag_seconds", "gauge"},
        {"pgshift_source_lsn_bytes", "gauge"},
        {"pgshift_received_lsn_bytes", "gauge"},
        {"pgshift_applied_lsn_bytes", "gauge"},
        {"pgshift_confirmed_lsn_bytes", "gauge"},
        {"pgshift_wal_received_bytes_total", "counter"},
        {"pgshift_transactions_applied_total", "counter"},
        {"pgshift_changes_applied_total", "counter"},
        {"pgshift_queue_changes", "gauge"},
        {"pgshift_queue_bytes", "gauge"},
        {"pgshift_apply_latency_seconds", "histogram"},
        {"pgshift_errors_total", "counter"},
        {"pgshift_reconnects_total", "counter"},
        {"pgshift_copy_tables", "gauge"},
        {"pgshift_copy_rows_total", "counter"},
        {"pgshift_copy_bytes_total", "counter"},
        {"pgshift_slot_retained_wal_bytes", "gauge"},
        {"pgshift_cutover_write_downtime_seconds", "gauge"},
        {"pgshift_cutover_phase_seconds", "gauge"},
        {"pgshift_tables_not_replicated", "gauge"},
        {"pgshift_schema_differences", "gauge"},
        {"pgshift_spill_errors_total", "counter"},
        {"pgshift_apply_workers", "gauge"},
        {"pgshift_apply_batches_in_flight", "gauge"},
        {"pgshift_apply_batches_total", "counter"},
        {"pgshift_apply_batches_chained_total", "counter"},
        {"pgshift_apply_batches_one_round_trip_total", "counter"},
        {"pgshift_apply_batches_inline_total", "counter"},
        {"pgshift_apply_wait_seconds_total", "counter"},
        {"pgshift_apply_retries_total", "counter"},
        {"pgshift_apply_statements_total", "counter"},
        {"pgshift_apply_rows_written_total", "counter"},
        {"pgshift_apply_compaction_fallbacks_total", "counter"},
        {"pgshift_verify_running", "gauge"},
        {"pgshift_verify_tables", "gauge"},
        {"pgshift_verify_rows_compared", "gauge"},
    };
    for (const auto& [name, type] : expected) {
        INFO(name);
        REQUIRE(e.types.count(name) == 1);
        CHECK(e.types.at(name) == type);
        CHECK(e.help.count(name) == 1);
    }
    CHECK(e.types.size() == expected.size());
    CHECK(e.value("pgshift_build_info{version=\"1.2.3\"}") == 1.0);
}

TEST_CASE("pgshift_state lists every state, 1 for the current one", "[control][metrics]")
{
    for (const char* current : k_states) {
        StatusSnapshot s;
        s.state = current;
        Exposition e(render_metrics(s, "v"));
        for (const char* state : k_states) {
            INFO(current << " / " << state);
            CHECK(e.value(std::string("pgshift_state{state=\"") + state + "\"}") ==
                  (std::string_view(state) == current ? 1.0 : 0.0));
        }
    }
}

TEST_CASE("labelled series exist at zero and carry the snapshot's values", "[control][metrics]")
{
    Exposition idle(render_metrics(StatusSnapshot{}, "v"));
    Exposition busy(render_metrics(busy_snapshot(), "v"));
    const std::map<std::string, double> busy_values = {
        {R"(pgshift_direction{direction="forward"})", 0},
        {R"(pgshift_direction{direction="reverse"})", 1},
        {R"(pgshift_changes_applied_total{op="insert"})", 11},
        {R"(pgshift_changes_applied_total{op="update"})", 12},
        {R"(pgshift_changes_applied_total{op="delete"})", 13},
        {R"(pgshift_changes_applied_total{op="truncate"})", 14},
        {R"(pgshift_errors_total{stage="source"})", 31},
        {R"(pgshift_errors_total{stage="decode"})", 32},
        {R"(pgshift_errors_total{stage="apply"})", 33},
        {R"(pgshift_errors_total{stage="copy"})", 34},
        {R"(pgshift_errors_total{stage="control"})", 35},
        {R"(pgshift_reconnects_total{endpoint="source"})", 41},
        {R"(pgshift_reconnects_total{endpoint="target"})", 42},
        {R"(pgshift_copy_tables{state="pending"})", 1}, // 10 total - 6 done - 3 copying
        {R"(pgshift_copy_tables{state="copying"})", 3},
        {R"(pgshift_copy_tables{state="done"})", 6},
    };
    for (const auto& [series, value] : busy_values) {
        INFO(series);
        CHECK(busy.value(series) == value);
        // Present in the idle exposition too (direction "forward" is 1 there).
        REQUIRE(idle.value(series).has_value());
    }
    CHECK(idle.value(R"(pgshift_direction{direction="forward"})") == 1.0);
}

TEST_CASE("plain gauges and counters carry the snapshot's values", "[control][metrics]")
{
    Exposition e(render_metrics(busy_snapshot(), "v"));
    CHECK(e.value("pgshift_paused") == 1.0);
    CHECK(e.value("pgshift_lag_bytes") == 1294967296.0);
    CHECK(e.value("pgshift_lag_seconds") == 2.25);
    CHECK(e.value("pgshift_source_lsn_bytes") == 4294967296.0);
    CHECK(e.value("pgshift_received_lsn_bytes") == 4000000000.0);
    CHECK(e.value("pgshift_applied_lsn_bytes") == 3000000000.0);
    CHECK(e.value("pgshift_confirmed_lsn_bytes") == 2000000000.0);
    CHECK(e.value("pgshift_wal_received_bytes_total") == 123456789.0);
    CHECK(e.value("pgshift_transactions_applied_total") == 17.0);
    CHECK(e.value("pgshift_queue_changes") == 21.0);
    CHECK(e.value("pgshift_queue_bytes") == 22.0);
    CHECK(e.value("pgshift_copy_rows_total") == 1000001.0);
    CHECK(e.value("pgshift_copy_bytes_total") == 1000002.0);
    CHECK(e.value("pgshift_slot_retained_wal_bytes") == 23.0);
    CHECK(e.value("pgshift_cutover_write_downtime_seconds") == 0.75);
    CHECK(e.value(R"(pgshift_cutover_phase_seconds{phase="fencing"})") == 0.125);
    CHECK(e.value(R"(pgshift_cutover_phase_seconds{phase="verifying"})") == 0.0);
}

TEST_CASE("the apply latency histogram has every bucket, +Inf equal to the count", "[control][metrics]")
{
    Exposition e(render_metrics(busy_snapshot(), "v"));
    const std::map<std::string, double> buckets = {
        {"0.005", 1}, {"0.01", 3}, {"0.025", 4}, {"0.05", 6}, {"0.1", 8},   {"0.25", 10}, {"0.5", 12},
        {"1", 14},    {"2.5", 16}, {"5", 18},    {"10", 19},  {"30", 20},   {"+Inf", 21},
    };
    for (const auto& [le, count] : buckets) {
        INFO(le);
        CHECK(e.value("pgshift_apply_latency_seconds_bucket{le=\"" + le + "\"}") == count);
    }
    CHECK(e.value("pgshift_apply_latency_seconds_count") == 21.0);
    CHECK(e.value("pgshift_apply_latency_seconds_sum") == 123.5);
}

TEST_CASE("pending copy tables saturate at zero on an inconsistent snapshot", "[control][metrics]")
{
    StatusSnapshot s;
    s.initial_copy.tables_total = 2;
    s.initial_copy.tables_done = 2;
    s.initial_copy.tables_copying = 1;
    Exposition e(render_metrics(s, "v"));
    CHECK(e.value(R"(pgshift_copy_tables{state="pending"})") == 0.0);
}

TEST_CASE("HELP text is printable ASCII without backslashes (the serializer does not escape it)",
          "[control][metrics]")
{
    Exposition e(render_metrics(busy_snapshot(), "v"));
    for (const auto& [name, text] : e.help) {
        INFO(name);
        CHECK_FALSE(text.empty());
        CHECK(std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '\\'; }));
    }
}
