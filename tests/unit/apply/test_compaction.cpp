// Net-change compaction against an in-memory model: random valid change sequences (inserts,
// updates with unchanged-TOAST columns, key changes, deletes and re-inserts, over a few keys of
// three tables, one of them not compactable), applied as received and applied compacted, must
// leave the same rows; the compacted operations must each be valid where they are applied (no
// missing row, no duplicate key). Seeded: PGSHIFT_COMPACTION_SEED reproduces one run.
#include "pgshift/apply/compaction.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>

using namespace pgshift;
using namespace pgshift::apply;
using protocol::ColumnKind;
using protocol::OldKind;

namespace {

constexpr std::size_t k_columns = 4; // key, a, b, c
const std::vector<std::uint16_t> k_key = {0};

Value text(const std::string& s) { return {ColumnKind::text, s}; }
Value unchanged() { return {ColumnKind::unchanged_toast, {}}; }

std::string show(const Row& r)
{
    std::string s = "(";
    for (const auto& v : r)
        s += (v.kind == ColumnKind::text ? v.data : std::string(1, static_cast<char>(v.kind))) + ",";
    return s + ")";
}

/// Rows per table, by key text.
using Model = std::map<int, std::map<std::string, Row>>;

/// Applies one operation the way the target would; returns an error text, or "" when it worked.
std::string apply_op(Model& m, int table, const RowOp& op)
{
    auto& rows = m[table];
    if (op.kind == OpKind::insert) {
        const auto& k = op.row[0].data;
        if (rows.count(k))
            return "insert: duplicate key " + k;
        for (const auto& v : op.row)
            if (v.kind == ColumnKind::unchanged_toast)
                return "insert with an unchanged TOAST column";
        rows[k] = op.row;
        return "";
    }
    const Row& locator = op.old_kind == OldKind::none ? op.row : op.old;
    if (locator.empty() || locator[0].kind != ColumnKind::text)
        return "no key to locate the row";
    auto it = rows.find(locator[0].data);
    if (it == rows.end())
        return std::string(op.kind == OpKind::del ? "delete" : "update") + ": missing row " + locator[0].data;
    if (op.kind == OpKind::del) {
        rows.erase(it);
        return "";
    }
    Row next = it->second;
    for (std::size_t i = 0; i < op.row.size(); ++i)
        if (op.row[i].kind != ColumnKind::unchanged_toast)
            next[i] = op.row[i];
    const auto& nk = next[0].data;
    if (nk != it->first) {
        if (rows.count(nk))
            return "update: duplicate key " + nk;
        rows.erase(it);
    }
    rows[nk] = next;
    return "";
}

struct Generated {
    int table;
    RowOp op;
};

/// A random valid sequence: every change makes sense for the rows present at its point.
std::vector<Generated> generate(std::mt19937_64& rng, std::size_t n)
{
    Model m;
    std::vector<Generated> out;
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    auto value = [&]() -> Value {
        int r = pick(0, 9);
        if (r == 0)
            return {ColumnKind::null, {}};
        return text("v" + std::to_string(pick(0, 99)));
    };
    while (out.size() < n) {
        int table = pick(0, 2);
        auto& rows = m[table];
        std::string key = std::to_string(pick(0, 5));
        bool present = rows.count(key) > 0;
        RowOp op;
        op.table = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(table + 1));
        op.txn = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(out.size() + 1));
        if (!present) {
            op.kind = OpKind::insert;
            op.row = {text(key), value(), value(), value()};
        } else if (pick(0, 3) == 0) {
            op.kind = OpKind::del;
            op.old_kind = OldKind::key;
            op.old = {text(key), {}, {}, {}};
        } else {
            op.kind = OpKind::update;
            op.row = {text(key), pick(0, 2) == 0 ? unchanged() : value(), pick(0, 2) == 0 ? unchanged() : value(),
                      value()};
            std::string nk = std::to_string(pick(0, 7));
            if (pick(0, 2) == 0 && !rows.count(nk)) {
                // A key change: the old key is sent.
                op.row[0] = text(nk);
                op.old_kind = OldKind::key;
                op.old = {text(key), {}, {}, {}};
            } else if (pick(0, 4) == 0) {
                // The key column itself unchanged TOAST: only resolvable through the old key.
                op.row[0] = unchanged();
                op.old_kind = OldKind::key;
                op.old = {text(key), {}, {}, {}};
            }
        }
        // Key-column 'u' in the model: it locates by old, keeps the key.
        Model probe = m;
        auto err = apply_op(probe, table, op);
        if (!err.empty())
            continue; // not valid here (e.g. 'u' key with no old key): draw again
        m = std::move(probe);
        out.push_back({table, std::move(op)});
    }
    return out;
}

int table_of(const RowOp& op) { return static_cast<int>(reinterpret_cast<std::uintptr_t>(op.table)) - 1; }

std::string key_text(const RowOp& op)
{
    const Row& r = op.old_kind == OldKind::none ? op.row : op.old;
    return r.empty() ? "" : r[0].data;
}

} // namespace

TEST_CASE("compaction: compacted changes leave exactly the rows the changes as received leave", "[compaction]")
{
    std::uint64_t first = 1, count = 3000;
    if (const char* s = std::getenv("PGSHIFT_COMPACTION_SEED")) {
        first = std::strtoull(s, nullptr, 10);
        count = 1;
    }
    std::uint64_t compacted_total = 0, received_total = 0, passed_whole = 0;
    for (std::uint64_t seed = first; seed < first + count; ++seed) {
        std::mt19937_64 rng(seed);
        auto changes = generate(rng, 1 + rng() % 60);
        INFO("seed " << seed << " (PGSHIFT_COMPACTION_SEED=" << seed << " reproduces it)");

        Model expected;
        for (const auto& g : changes)
            REQUIRE(apply_op(expected, g.table, g.op).empty());

        // Tables 0 and 1 are keyed by column 0; table 2 is not compactable (kept in order).
        Compactor c;
        std::vector<RowOp> out;
        std::vector<std::size_t> flush_points; // where each flush's output starts
        for (const auto& g : changes) {
            CompactTable t{g.op.table, static_cast<std::uint64_t>(g.table), g.table == 2 ? nullptr : &k_key};
            auto before = out.size();
            c.add(t, g.op, out);
            if (out.size() != before)
                flush_points.push_back(before);
            if (rng() % 25 == 0) { // a TRUNCATE or a new definition elsewhere flushes
                flush_points.push_back(out.size());
                c.flush(out);
            }
        }
        flush_points.push_back(out.size());
        c.flush(out);
        REQUIRE(c.empty());

        Model actual;
        for (const auto& op : out) {
            INFO("op " << static_cast<int>(op.kind) << " table " << table_of(op) << " row " << show(op.row) << " old "
                       << show(op.old));
            REQUIRE(apply_op(actual, table_of(op), op) == "");
        }
        for (int t = 0; t < 3; ++t) {
            INFO("table " << t);
            REQUIRE(actual[t] == expected[t]);
        }

        // Operations marked distinct never share a row with another of the same flush and kind
        // (a multi-row statement must not touch one row twice).
        flush_points.push_back(out.size());
        std::sort(flush_points.begin(), flush_points.end());
        for (std::size_t f = 0; f + 1 < flush_points.size(); ++f) {
            std::set<std::tuple<int, int, std::string>> seen;
            for (std::size_t i = flush_points[f]; i < flush_points[f + 1]; ++i) {
                const auto& op = out[i];
                if (!op.distinct)
                    continue;
                auto k = std::make_tuple(static_cast<int>(op.kind), table_of(op), key_text(op));
                REQUIRE(seen.insert(k).second);
            }
        }
        // The non-compactable table keeps every change.
        std::size_t t2_in = 0, t2_out = 0;
        for (const auto& g : changes)
            t2_in += g.table == 2;
        for (const auto& op : out)
            t2_out += table_of(op) == 2;
        REQUIRE(t2_in == t2_out);

        received_total += changes.size();
        compacted_total += out.size();
        passed_whole += out.size() == changes.size();
    }
    // The property is only worth something if compaction actually happened.
    if (count > 1) {
        CHECK(compacted_total < received_total * 8 / 10);
        CHECK(passed_whole < count / 2);
    }
}

TEST_CASE("compaction: the documented net effects", "[compaction]")
{
    const void* T = reinterpret_cast<const void*>(1);
    CompactTable t{T, 1, &k_key};
    auto ins = [&](std::string k, std::string a) {
        return RowOp{OpKind::insert, T, nullptr, OldKind::none, {text(k), text(a), text("b"), text("c")}, {}, false};
    };
    auto upd = [&](std::string k, Value a) {
        return RowOp{OpKind::update, T, nullptr, OldKind::none, {text(k), a, unchanged(), text("c2")}, {}, false};
    };
    auto del = [&](std::string k) {
        return RowOp{OpKind::del, T, nullptr, OldKind::key, {}, {text(k), {}, {}, {}}, false};
    };
    Compactor c;
    std::vector<RowOp> out;

    SECTION("insert + updates = one insert of the final image")
    {
        c.add(t, ins("1", "a"), out);
        c.add(t, upd("1", text("a2")), out);
        c.add(t, upd("1", unchanged()), out);
        c.flush(out);
        REQUIRE(out.size() == 1);
        CHECK(out[0].kind == OpKind::insert);
        CHECK(out[0].row == Row{text("1"), text("a2"), text("b"), text("c2")});
    }
    SECTION("updates = one update; a column unchanged in every image stays out of SET")
    {
        c.add(t, upd("1", text("a2")), out);
        c.add(t, upd("1", unchanged()), out);
        c.flush(out);
        REQUIRE(out.size() == 1);
        CHECK(out[0].kind == OpKind::update);
        CHECK(out[0].row == Row{text("1"), text("a2"), unchanged(), text("c2")});
        CHECK(out[0].old[0] == text("1"));
    }
    SECTION("insert + delete = nothing; delete + insert = delete then insert")
    {
        c.add(t, ins("1", "a"), out);
        c.add(t, del("1"), out);
        c.add(t, del("2"), out);
        c.add(t, ins("2", "x"), out);
        c.flush(out);
        REQUIRE(out.size() == 2);
        CHECK(out[0].kind == OpKind::del);
        CHECK(out[0].old[0] == text("2"));
        CHECK(out[1].kind == OpKind::insert);
        CHECK(out[1].row[1] == text("x"));
    }
    SECTION("a key change whose new image cannot be completed passes through, in order")
    {
        c.add(t, upd("5", text("a")), out); // pending
        RowOp kc{OpKind::update, T, nullptr, OldKind::key, {text("6"), text("z"), unchanged(), text("c")},
                 {text("5"), {}, {}, {}}, false};
        c.add(t, kc, out);
        REQUIRE(out.size() == 2); // the pending update, then the key change as received
        CHECK(out[0].kind == OpKind::update);
        CHECK(out[1].old_kind == OldKind::key);
        CHECK(out[1].row[2].kind == ColumnKind::unchanged_toast);
        CHECK_FALSE(out[1].distinct);
    }
    SECTION("a key change after the insert becomes one insert under the new key")
    {
        c.add(t, ins("1", "a"), out);
        RowOp kc{OpKind::update, T, nullptr, OldKind::key, {text("9"), unchanged(), unchanged(), text("c")},
                 {text("1"), {}, {}, {}}, false};
        c.add(t, kc, out);
        c.flush(out);
        REQUIRE(out.size() == 1);
        CHECK(out[0].kind == OpKind::insert);
        CHECK(out[0].row == Row{text("9"), text("a"), text("b"), text("c")});
    }
    SECTION("a new definition of the relation flushes what the old one gathered")
    {
        c.add(t, ins("1", "a"), out);
        CompactTable t2{reinterpret_cast<const void*>(2), 1, &k_key};
        auto op = ins("2", "b");
        op.table = t2.id;
        c.add(t2, op, out);
        REQUIRE(out.size() == 1);
        CHECK(out[0].table == T);
    }
}
