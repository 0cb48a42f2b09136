// Micro-benchmarks: pgoutput decode and MessageLog append+read throughput, as ratios to a memcpy reference.
//
// Design notes
// - Every case has a reference case that memcpy's the same bytes the same way (message by message,
//   or as one block for MessageLog), measured in the same run. Absolute MB/s depend on the machine
//   and its load; the "x memcpy" ratio printed at the end is what to compare between revisions.
// - Inputs: a typical 10-column Insert and an Update with an old key tuple, built from the pgoutput
//   layout; all golden captures (the loader of tests/unit/protocol, so the in_stream context is
//   right); MessageLog filled with ~4 MiB of golden messages, in memory and spilled to a file in
//   std::filesystem::temp_directory_path().
// - Bytes processed are payload bytes (MessageLog's length prefixes are not counted).
#include "golden.hpp"

#include "pgshift/protocol/pgoutput.hpp"
#include "pgshift/queue/message_log.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pgshift::test {
namespace {

using protocol::DecodeContext;
using protocol::test::WireBuilder;

/// One message to decode and the context to decode it in.
struct Input {
    std::string bytes;
    DecodeContext ctx;
};

/// Ten columns of a typical OLTP row as text: int4, text, numeric, timestamptz, bool, NULL, a
/// longer text, int8, uuid, jsonb.
WireBuilder& typical_row(WireBuilder& w)
{
    static const char* const values[] = {
        "12345", "alice@example.com", "100.50", "2026-01-21 12:34:56.789012+00", "t", nullptr,
        "Lorem ipsum dolor sit amet, consectetur.", "9876543210", "8f14e45f-ceea-467f-a0e6-3c8b0e4b8e2a",
        R"({"k": "v", "n": 1})",
    };
    w.i16(10);
    for (const char* v : values) {
        if (v == nullptr) {
            w.u8('n');
            continue;
        }
        w.u8('t').i32(static_cast<std::int32_t>(std::strlen(v))).raw(v);
    }
    return w;
}

Input insert_10_columns()
{
    WireBuilder w;
    w.u8('I').u32(16394).u8('N');
    typical_row(w);
    return {w.str(), DecodeContext{}};
}

/// An Update that changed the key: the old key tuple ('K': key column set, others 'n'), then the new row.
Input update_with_old_key()
{
    WireBuilder w;
    w.u8('U').u32(16394).u8('K').i16(10).u8('t').i32(5).raw("12344");
    for (int i = 1; i < 10; ++i)
        w.u8('n');
    w.u8('N');
    typical_row(w);
    return {w.str(), DecodeContext{}};
}

std::vector<Input> golden_stream()
{
    std::vector<Input> v;
    for (const auto& m : protocol::test::load_all_golden())
        v.push_back({m.bytes, m.ctx});
    return v;
}

std::int64_t total_bytes(const std::vector<Input>& v)
{
    std::int64_t n = 0;
    for (const auto& i : v)
        n += static_cast<std::int64_t>(i.bytes.size());
    return n;
}

void decode_messages(benchmark::State& state, const std::vector<Input>& inputs)
{
    for (auto _ : state) {
        for (const auto& in : inputs) {
            auto m = protocol::decode(in.bytes, in.ctx);
            benchmark::DoNotOptimize(m);
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * total_bytes(inputs));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * inputs.size()));
}

/// The reference for decode_messages: copy each message's bytes out, as a decoder that copied
/// instead of pointing into the buffer would at the very least have to.
void copy_messages(benchmark::State& state, const std::vector<Input>& inputs)
{
    std::size_t largest = 0;
    for (const auto& in : inputs)
        largest = std::max(largest, in.bytes.size());
    std::string out(largest, '\0');
    for (auto _ : state) {
        for (const auto& in : inputs) {
            std::memcpy(out.data(), in.bytes.data(), in.bytes.size());
            benchmark::ClobberMemory();
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * total_bytes(inputs));
}

/// Golden messages repeated to about `target` bytes of payload: the contents of one big transaction.
std::vector<std::string> log_payloads(std::size_t target)
{
    std::vector<std::string> v;
    auto golden = golden_stream();
    for (std::size_t n = 0; n < target;)
        for (const auto& in : golden) {
            v.push_back(in.bytes);
            n += in.bytes.size();
        }
    return v;
}

std::int64_t total_bytes(const std::vector<std::string>& v)
{
    std::int64_t n = 0;
    for (const auto& s : v)
        n += static_cast<std::int64_t>(s.size());
    return n;
}

void message_log_round_trip(benchmark::State& state, const std::vector<std::string>& payloads,
                            std::size_t memory_limit, bool expect_spill)
{
    auto dir = std::filesystem::temp_directory_path();
    for (auto _ : state) {
        queue::MessageLog log(dir, memory_limit);
        for (const auto& p : payloads)
            log.append(p);
        log.seal();
        if (log.spilled() != expect_spill) {
            state.SkipWithError(expect_spill ? "MessageLog did not spill" : "MessageLog spilled");
            break;
        }
        auto cursor = log.cursor();
        std::string_view p;
        std::size_t n = 0;
        while (cursor.next(p)) {
            benchmark::DoNotOptimize(p.data());
            n += p.size();
        }
        benchmark::DoNotOptimize(n);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * total_bytes(payloads));
}

/// The reference for MessageLog: append the payloads to one buffer and copy it out once.
void copy_block(benchmark::State& state, const std::vector<std::string>& payloads)
{
    std::string block;
    std::string out;
    for (auto _ : state) {
        block.clear();
        for (const auto& p : payloads)
            block.append(p);
        out.assign(block);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * total_bytes(payloads));
}

/// Console output as usual, then each case's throughput as a ratio to its reference case.
class RatioReporter : public benchmark::ConsoleReporter {
public:
    /// `pairs`: (case name, reference name).
    explicit RatioReporter(std::vector<std::pair<std::string, std::string>> pairs) : pairs_(std::move(pairs)) {}

    void ReportRuns(const std::vector<Run>& runs) override
    {
        ConsoleReporter::ReportRuns(runs);
        for (const auto& r : runs) {
            if (r.error_occurred || r.run_type != Run::RT_Iteration)
                continue;
            auto it = r.counters.find("bytes_per_second");
            if (it == r.counters.end())
                continue;
            auto& acc = rates_[r.run_name.function_name];
            acc.first += it->second.value;
            acc.second += 1;
        }
    }

    void print_ratios() const
    {
        std::printf("\n%-34s %12s %12s %10s\n", "case (MB = 10^6 B)", "MB/s", "ref MB/s", "x memcpy");
        for (const auto& [name, ref] : pairs_) {
            auto a = rates_.find(name);
            auto b = rates_.find(ref);
            if (a == rates_.end() || b == rates_.end())
                continue;
            double mbs = a->second.first / a->second.second / 1e6;
            double ref_mbs = b->second.first / b->second.second / 1e6;
            std::printf("%-34s %12.1f %12.1f %10.3f\n", name.c_str(), mbs, ref_mbs, mbs / ref_mbs);
        }
    }

private:
    std::vector<std::pair<std::string, std::string>> pairs_;
    std::map<std::string, std::pair<double, int>> rates_; ///< function name -> (sum of B/s, runs)
};

} // namespace
} // namespace pgshift::test

int main(int argc, char** argv)
{
    using namespace pgshift::test;
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;

    // Inputs live until the end of main; the registered lambdas refer to them.
    const std::vector<Input> insert{insert_10_columns()};
    const std::vector<Input> update{update_with_old_key()};
    const std::vector<Input> golden = golden_stream();
    const std::vector<std::string> log4m = log_payloads(std::size_t{4} << 20);

    std::vector<std::pair<std::string, std::string>> pairs;
    auto decode_case = [&](const std::string& name, const std::vector<Input>& in) {
        benchmark::RegisterBenchmark(("decode/" + name).c_str(),
                                     [&in](benchmark::State& s) { decode_messages(s, in); });
        benchmark::RegisterBenchmark(("reference_copy/" + name).c_str(),
                                     [&in](benchmark::State& s) { copy_messages(s, in); });
        pairs.emplace_back("decode/" + name, "reference_copy/" + name);
    };
    decode_case("insert_10_columns", insert);
    decode_case("update_old_key", update);
    decode_case("golden_stream", golden);

    benchmark::RegisterBenchmark("message_log/in_memory_4MiB", [&](benchmark::State& s) {
        message_log_round_trip(s, log4m, std::size_t{256} << 20, false);
    })->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("message_log/spilled_4MiB", [&](benchmark::State& s) {
        message_log_round_trip(s, log4m, 0, true);
    })->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("reference_copy/message_log_4MiB", [&](benchmark::State& s) {
        copy_block(s, log4m);
    })->Unit(benchmark::kMillisecond);
    pairs.emplace_back("message_log/in_memory_4MiB", "reference_copy/message_log_4MiB");
    pairs.emplace_back("message_log/spilled_4MiB", "reference_copy/message_log_4MiB");

    RatioReporter reporter(std::move(pairs));
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_ratios();
    benchmark::Shutdown();
    return 0;
}
