// Unit tests of the bounded SPSC transaction queue.
#include "pgshift/queue/txn_queue.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace pgshift::queue;

namespace {

std::unique_ptr<Transaction> txn(std::size_t bytes, std::uint32_t xid)
{
    auto t = std::make_unique<Transaction>(MessageLog("/tmp", 1024));
    t->bytes = bytes;
    t->xid.value = xid;
    return t;
}

} // namespace

TEST_CASE("the queue is bounded in bytes but always admits one transaction", "[queue]")
{
    TxnQueue q(1000);
    auto big = txn(5000, 1);
    REQUIRE(q.try_push(big)); // alone: admitted although larger than the bound
    auto next = txn(10, 2);
    REQUIRE_FALSE(q.try_push(next));
    REQUIRE(next); // not consumed on failure
    REQUIRE(q.pop(std::chrono::milliseconds(0))->xid.value == 1);
    REQUIRE(q.try_push(next));
    REQUIRE(q.bytes() == 10);
}

TEST_CASE("transactions cross threads in order and nothing is lost", "[queue]")
{
    TxnQueue q(10'000, 64);
    constexpr std::uint32_t n = 20000;
    std::thread producer([&] {
        for (std::uint32_t i = 1; i <= n; ++i) {
            auto t = txn(100, i);
            while (!q.try_push(t))
                q.wait_for_space(100, std::chrono::milliseconds(10));
        }
    });
    std::uint32_t expected = 1;
    while (expected <= n) {
        auto t = q.pop(std::chrono::milliseconds(100));
        if (!t)
            continue;
        REQUIRE(t->xid.value == expected);
        ++expected;
    }
    producer.join();
    REQUIRE(q.entries() == 0);
    REQUIRE(q.bytes() == 0);
}
