// Unit tests of MessageLog: memory and spill modes, truncation, cursor windows, cleanup.
#include "pgshift/queue/message_log.hpp"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <random>
#include <vector>

using pgshift::queue::MessageLog;

namespace {

std::vector<std::string> read_all(MessageLog& log)
{
    log.seal();
    std::vector<std::string> out;
    auto c = log.cursor();
    std::string_view p;
    while (c.next(p))
        out.emplace_back(p);
    return out;
}

std::vector<std::string> sample(std::size_t n, std::size_t max_len, unsigned seed)
{
    std::mt19937 rng(seed);
    std::vector<std::string> v;
    for (std::size_t i = 0; i < n; ++i) {
        std::string s(rng() % max_len, '\0');
        for (auto& ch : s)
            ch = static_cast<char>(rng());
        v.push_back(std::move(s));
    }
    return v;
}

std::size_t spill_files(const std::string& dir)
{
    // Spill files are unlinked at once: none must ever be visible.
    std::size_t n = 0;
    if (DIR* d = opendir(dir.c_str())) {
        while (auto* e = readdir(d))
            n += std::string(e->d_name).rfind("pgshift-spill-", 0) == 0;
        closedir(d);
    }
    return n;
}

} // namespace

TEST_CASE("a small log stays in memory and reads back in order", "[queue]")
{
    MessageLog log("/tmp", 1 << 20);
    auto msgs = sample(100, 300, 1);
    for (auto& m : msgs)
        log.append(m);
    REQUIRE_FALSE(log.spilled());
    REQUIRE(log.count() == 100);
    REQUIRE(read_all(log) == msgs);
}

TEST_CASE("a log past its memory limit spills, bounds its memory and reads back identically", "[queue]")
{
    MessageLog log("/tmp", 64 * 1024);
    // Messages across read-window boundaries, including some bigger than the 1 MiB window.
    auto msgs = sample(3000, 4000, 2);
    msgs.insert(msgs.begin() + 1500, std::string(3 << 20, 'x'));
    msgs.insert(msgs.begin() + 10, std::string((1 << 20) - 2, 'y'));
    for (auto& m : msgs)
        log.append(m);
    REQUIRE(log.spilled());
    REQUIRE(log.memory_bytes() <= 2 * (1 << 20) + (3 << 20) + 64);
    REQUIRE(spill_files("/tmp") == 0);
    REQUIRE(read_all(log) == msgs);
}

TEST_CASE("truncate drops a rolled-back tail, in memory and spilled", "[queue]")
{
    for (std::size_t limit : {std::size_t(1 << 20), std::size_t(1000)}) {
        MessageLog log("/tmp", limit);
        auto msgs = sample(200, 100, 3);
        for (std::size_t i = 0; i < 120; ++i)
            log.append(msgs[i]);
        auto mark = log.position();
        for (std::size_t i = 120; i < 200; ++i)
            log.append(msgs[i]);
        log.truncate(mark);
        REQUIRE(log.count() == 120);
        log.append("after");
        auto got = read_all(log);
        REQUIRE(got.size() == 121);
        REQUIRE(got.back() == "after");
        REQUIRE(std::equal(got.begin(), got.begin() + 120, msgs.begin()));
    }
}

TEST_CASE("a moved log keeps its contents and the source is empty", "[queue]")
{
    MessageLog a("/tmp", 100);
    for (auto& m : sample(50, 50, 4))
        a.append(m);
    auto before = read_all(a);
    MessageLog b(std::move(a));
    REQUIRE(read_all(b) == before);
    REQUIRE(a.count() == 0);
}
