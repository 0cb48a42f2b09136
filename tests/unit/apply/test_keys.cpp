// Conflict keys (rule 5) and the commit gate (rule 2).
#include "pgshift/apply/commit_order.hpp"
#include "pgshift/apply/relations.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <thread>

using namespace pgshift;
using namespace pgshift::apply;
using protocol::ColumnKind;
using protocol::ColumnValue;
using protocol::TupleData;

namespace {

/// Table (id PRIMARY KEY, code UNIQUE, note): sets {0} and {1}.
RelationInfo two_unique_sets()
{
    RelationInfo r;
    r.mapping.source_name = "public.t";
    r.unique_sets = {{0}, {1}};
    r.seed = 42;
    return r;
}

TupleData row(std::initializer_list<ColumnValue> cols) { return TupleData{std::vector<ColumnValue>(cols)}; }
ColumnValue t(std::string_view v) { return {ColumnKind::text, v}; }
const ColumnValue null_v{ColumnKind::null, {}};
const ColumnValue toast_v{ColumnKind::unchanged_toast, {}};

std::vector<std::uint64_t> keys_of(const protocol::Message& m, const RelationInfo& r, bool expect_ok = true)
{
    std::vector<std::uint64_t> k;
    CHECK(append_keys(m, r, k) == expect_ok);
    std::sort(k.begin(), k.end());
    return k;
}

bool share(std::vector<std::uint64_t> a, std::vector<std::uint64_t> b)
{
    for (auto x : a)
        if (std::find(b.begin(), b.end(), x) != b.end())
            return true;
    return false;
}

} // namespace

TEST_CASE("conflict keys: same row or same unique value conflict, others do not", "[apply][keys]")
{
    auto r = two_unique_sets();
    protocol::Insert a{{}, RelId{1}, row({t("1"), t("x"), t("n")})};
    protocol::Insert b{{}, RelId{1}, row({t("2"), t("y"), t("n")})};
    protocol::Insert same_code{{}, RelId{1}, row({t("3"), t("x"), t("n")})};
    CHECK(keys_of(a, r).size() == 2);
    CHECK_FALSE(share(keys_of(a, r), keys_of(b, r)));
    CHECK(share(keys_of(a, r), keys_of(same_code, r))); // same unique code on another row

    // The same text in another column set is another key.
    protocol::Insert swapped{{}, RelId{1}, row({t("x"), t("1"), t("n")})};
    CHECK_FALSE(share(keys_of(a, r), keys_of(swapped, r)));

    // Another table with the same values does not conflict.
    auto other = r;
    other.seed = 43;
    CHECK_FALSE(share(keys_of(a, r), keys_of(a, other)));
}

TEST_CASE("conflict keys: a key-changing update holds the old and the new key", "[apply][keys]")
{
    auto r = two_unique_sets();
    protocol::Update up{{}, RelId{1}, protocol::OldKind::key, row({t("1"), null_v, null_v}), row({t("9"), t("x"), t("n")})};
    protocol::Insert old_id{{}, RelId{1}, row({t("1"), t("z"), t("n")})};
    protocol::Insert new_id{{}, RelId{1}, row({t("9"), t("w"), t("n")})};
    CHECK(share(keys_of(up, r), keys_of(old_id, r)));
    CHECK(share(keys_of(up, r), keys_of(new_id, r)));
    // The old image of a key change carries no code: that old unique value is not a key (a
    // conflict on it is caught by the retry, ARCHITECTURE rule 5).
    protocol::Delete del{{}, RelId{1}, protocol::OldKind::key, row({t("5"), null_v, null_v})};
    CHECK(keys_of(del, r).size() == 1);
}

TEST_CASE("conflict keys: NULLs never conflict, unknown unique values cannot be keyed", "[apply][keys]")
{
    auto r = two_unique_sets();
    protocol::Insert a{{}, RelId{1}, row({t("1"), null_v, t("n")})};
    protocol::Insert b{{}, RelId{1}, row({t("2"), null_v, t("n")})};
    CHECK(keys_of(a, r).size() == 1);
    CHECK_FALSE(share(keys_of(a, r), keys_of(b, r)));

    // An unchanged TOAST value in a unique column, with no old image to take it from.
    protocol::Update toast{{}, RelId{1}, protocol::OldKind::none, {}, row({t("1"), toast_v, t("n")})};
    (void)keys_of(toast, r, false);
    // With a full old image the value is known.
    protocol::Update full{{}, RelId{1}, protocol::OldKind::full, row({t("1"), t("x"), t("o")}),
                          row({t("1"), toast_v, t("n")})};
    protocol::Insert same_code{{}, RelId{1}, row({t("3"), t("x"), t("n")})};
    CHECK(share(keys_of(full, r), keys_of(same_code, r)));
}

TEST_CASE("conflict keys: a table without a unique index: inserts commute, updates and deletes run alone",
          "[apply][keys]")
{
    RelationInfo r;
    r.table_key = true;
    r.seed = 7;
    protocol::Insert a{{}, RelId{1}, row({t("1")})};
    CHECK(keys_of(a, r).empty());
    protocol::Update up{{}, RelId{1}, protocol::OldKind::full, row({t("1")}), row({t("2")})};
    (void)keys_of(up, r, false);
    protocol::Delete del{{}, RelId{1}, protocol::OldKind::full, row({t("1")})};
    (void)keys_of(del, r, false);
}

TEST_CASE("commit order: batches commit in sequence, waiters wake, abort wakes everyone", "[apply][order]")
{
    CommitOrder order;
    CHECK(order.wait_committed(0, std::chrono::milliseconds(0)) == CommitOrder::Wait::ready);
    CHECK(order.wait_committed(1, std::chrono::milliseconds(10)) == CommitOrder::Wait::timeout);
    CHECK_THROWS_AS(order.committed(2), InternalError); // out of order
    std::thread t([&] { order.committed(1); });
    CHECK(order.wait_committed(1, std::chrono::seconds(5)) == CommitOrder::Wait::ready);
    t.join();
    order.executing(2, 100);
    order.executing(3, 101);
    CHECK(order.executing_before(3) == std::vector<int>{100});
    order.committed(2);
    CHECK(order.executing_before(4) == std::vector<int>{101});
    std::thread waiter([&] { CHECK(order.wait_committed(10, std::chrono::seconds(5)) == CommitOrder::Wait::aborted); });
    order.abort();
    waiter.join();
}
