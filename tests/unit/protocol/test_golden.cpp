// Golden tests: messages captured from a real PostgreSQL 15 decode to the values the workload wrote.
//
// The captures come from golden/capture.sh; xids, OIDs, LSNs and timestamps below are the ones
// that run produced (the header comment of each .hex file names its workload).
#include "golden.hpp"

#include "pgshift/common/clock.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>

using namespace pgshift;
using namespace pgshift::protocol;
using pgshift::protocol::test::describe;
using pgshift::protocol::test::GoldenFile;
using pgshift::protocol::test::GoldenMessage;
using Cols = std::vector<std::string>;

namespace {

constexpr std::uint32_t k_int8 = 20;
constexpr std::uint32_t k_text_array = 1009;
constexpr std::int32_t k_numeric_12_2 = (12 << 16 | 2) + 4; // VARHDRSZ + (precision << 16 | scale)

/// A capture with its decoded messages; keeps the bytes the messages point into alive.
struct Capture {
    std::vector<GoldenMessage> raw;
    std::vector<Message> msgs;

    explicit Capture(const GoldenFile& f) : raw(test::load_golden(f)), msgs(test::decode_all(raw)) {}

    template <typename T>
    const T& at(std::size_t i) const
    {
        INFO(raw.at(i).file << " line " << raw.at(i).line);
        REQUIRE(std::holds_alternative<T>(msgs.at(i)));
        return std::get<T>(msgs.at(i));
    }
};

Capture capture(const char* name)
{
    for (const auto& f : test::golden_files())
        if (std::string_view(f.name) == name)
            return Capture(f);
    throw std::logic_error(std::string("no golden file ") + name);
}

/// Column as "name:oid:typmod" plus ":key" for replica identity columns.
Cols describe_columns(const Relation& r)
{
    Cols out;
    for (const auto& c : r.columns)
        out.push_back(std::string(c.name) + ":" + std::to_string(c.type_oid) + ":" + std::to_string(c.type_modifier) +
                      (c.is_key() ? ":key" : ""));
    return out;
}

void check_accounts_relation(const Relation& r)
{
    CHECK(r.relid == RelId{16394});
    CHECK(r.nspname == "public");
    CHECK(r.relname == "accounts");
    CHECK(r.replident == ReplicaIdentity::default_);
    CHECK(describe_columns(r) == Cols{"id:23:-1:key", "name:25:-1", "balance:1700:" + std::to_string(k_numeric_12_2),
                                      "note:25:-1"});
    CHECK(r.columns[0].flags == 1);
    CHECK(r.columns[1].flags == 0);
}

/// Begin and its Commit agree, and the commit record ends after it starts.
void check_xact_pair(const Begin& b, const Commit& c)
{
    CHECK(c.flags == 0);
    CHECK(c.commit_lsn == b.final_lsn);
    CHECK(c.end_lsn > c.commit_lsn);
    CHECK(c.commit_ts == b.commit_ts);
}

} // namespace

TEST_CASE("every golden message decodes, and type_of matches its wire byte", "[golden]")
{
    for (const auto& f : test::golden_files()) {
        Capture c(f);
        REQUIRE(!c.msgs.empty());
        for (std::size_t i = 0; i < c.msgs.size(); ++i) {
            INFO(f.name << " line " << c.raw[i].line);
            CHECK(static_cast<char>(type_of(c.msgs[i])) == c.raw[i].bytes.front());
        }
    }
}

TEST_CASE("golden transactions: Begin/Commit pair up and commit LSNs increase", "[golden]")
{
    for (const auto& f : test::golden_files()) {
        Capture c(f);
        INFO(f.name);
        std::optional<Begin> open;
        Lsn last_end;
        int pairs = 0;
        for (const auto& m : c.msgs) {
            if (const auto* b = std::get_if<Begin>(&m)) {
                REQUIRE(!open);
                CHECK(b->final_lsn > last_end);
                open = *b;
            } else if (const auto* cm = std::get_if<Commit>(&m)) {
                REQUIRE(open);
                check_xact_pair(*open, *cm);
                last_end = cm->end_lsn;
                open.reset();
                ++pairs;
            } else if (const auto* sc = std::get_if<StreamCommit>(&m)) {
                CHECK(sc->end_lsn > sc->commit_lsn);
                CHECK(sc->commit_lsn > last_end);
                last_end = sc->end_lsn;
            }
        }
        CHECK(!open);
        CHECK(pairs > 0);
    }
}

TEST_CASE("golden dml_pk_v1: insert with NULLs, update without and with key change, delete", "[golden]")
{
    auto c = capture("dml_pk_v1.hex");
    REQUIRE(c.msgs.size() == 14);

    const auto& b1 = c.at<Begin>(0);
    CHECK(b1.xid == Xid{744});
    CHECK(b1.final_lsn == Lsn(0x156CD18));
    CHECK(b1.commit_ts == PgTimestamp{848607606507758});

    const auto& rel = c.at<Relation>(1);
    CHECK(!rel.xid);
    check_accounts_relation(rel);

    const auto& i1 = c.at<Insert>(2);
    CHECK(!i1.xid);
    CHECK(i1.relid == rel.relid);
    CHECK(describe(i1.new_tuple) == Cols{"t:1", "t:alice", "t:100.50", "n"});
    CHECK(describe(c.at<Insert>(3).new_tuple) == Cols{"t:2", "t:bob", "n", "t:vip"});

    const auto& c1 = c.at<Commit>(4);
    CHECK(c1.commit_lsn == Lsn(0x156CD18));
    CHECK(c1.end_lsn == Lsn(0x156CD48));

    // Non-key update: no old tuple, the new one carries every column.
    CHECK(c.at<Begin>(5).xid == Xid{745});
    const auto& u1 = c.at<Update>(6);
    CHECK(u1.relid == rel.relid);
    CHECK(u1.old_kind == OldKind::none);
    CHECK(u1.old_tuple.columns.empty());
    CHECK(describe(u1.new_tuple) == Cols{"t:1", "t:alice", "t:75.25", "n"});

    // Key change: 'K' tuple with the old key, non-key columns sent as NULL.
    CHECK(c.at<Begin>(8).xid == Xid{746});
    const auto& u2 = c.at<Update>(9);
    CHECK(u2.old_kind == OldKind::key);
    CHECK(describe(u2.old_tuple) == Cols{"t:2", "n", "n", "n"});
    CHECK(describe(u2.new_tuple) == Cols{"t:3", "t:bob", "n", "t:vip"});

    CHECK(c.at<Begin>(11).xid == Xid{747});
    const auto& d = c.at<Delete>(12);
    CHECK(d.relid == rel.relid);
    CHECK(d.old_kind == OldKind::key);
    CHECK(describe(d.old_tuple) == Cols{"t:1", "n", "n", "n"});
    CHECK(c.at<Commit>(13).end_lsn == Lsn(0x156CF08));
}

TEST_CASE("golden replica_identity_v1: FULL sends 'O' tuples, USING INDEX sends 'K' on key change", "[golden]")
{
    auto c = capture("replica_identity_v1.hex");
    REQUIRE(c.msgs.size() == 11);

    const auto& full = c.at<Relation>(1);
    CHECK(full.relname == "audit_full");
    CHECK(full.replident == ReplicaIdentity::full);
    // FULL flags every column as part of the identity.
    CHECK(describe_columns(full) == Cols{"id:23:-1:key", "label:25:-1:key", "amount:20:-1:key"});

    const auto& u = c.at<Update>(2);
    CHECK(u.relid == full.relid);
    CHECK(u.old_kind == OldKind::full);
    CHECK(describe(u.old_tuple) == Cols{"t:1", "t:first", "t:10"});
    CHECK(describe(u.new_tuple) == Cols{"t:1", "t:first", "t:20"});

    const auto& d = c.at<Delete>(5);
    CHECK(d.old_kind == OldKind::full);
    CHECK(describe(d.old_tuple) == Cols{"t:2", "t:second", "n"});

    const auto& idx = c.at<Relation>(8);
    CHECK(idx.relname == "ri_index");
    CHECK(idx.replident == ReplicaIdentity::index);
    CHECK(describe_columns(idx) == Cols{"code:23:-1:key", "descr:25:-1"});
    const auto& u2 = c.at<Update>(9);
    CHECK(u2.relid == idx.relid);
    CHECK(u2.old_kind == OldKind::key);
    CHECK(describe(u2.old_tuple) == Cols{"t:7", "n"});
    CHECK(describe(u2.new_tuple) == Cols{"t:8", "t:seven"});
}

TEST_CASE("golden toast_unchanged_v1: an unchanged out-of-line value arrives as 'u'", "[golden]")
{
    auto c = capture("toast_unchanged_v1.hex");
    REQUIRE(c.msgs.size() == 4);
    const auto& rel = c.at<Relation>(1);
    CHECK(rel.relname == "docs");
    CHECK(describe_columns(rel) == Cols{"id:23:-1:key", "title:25:-1", "body:25:-1"});
    const auto& u = c.at<Update>(2);
    CHECK(u.old_kind == OldKind::none);
    CHECK(describe(u.new_tuple) == Cols{"t:1", "t:final", "u"});
    CHECK(u.new_tuple.columns[2].data.empty());
}

TEST_CASE("golden types_v1: Type messages for an enum and a domain precede the Relation", "[golden]")
{
    auto c = capture("types_v1.hex");
    REQUIRE(c.msgs.size() == 7);

    const auto& mood = c.at<Type>(1);
    CHECK(!mood.xid);
    CHECK(mood.type_oid == 16385);
    CHECK(mood.nspname == "public");
    CHECK(mood.typname == "mood");

    // A domain is announced under its own OID but with its base type's name (pg_catalog.int4):
    // the domain's name is not on the wire.
    const auto& dom = c.at<Type>(2);
    CHECK(dom.type_oid == 16392);
    CHECK(dom.nspname.empty());
    CHECK(dom.typname == "int4");

    const auto& rel = c.at<Relation>(3);
    CHECK(rel.relname == "people");
    CHECK(describe_columns(rel) == Cols{"id:23:-1:key", "feeling:16385:-1", "age:16392:-1", "tags:1009:-1"});
    CHECK(rel.columns[3].type_oid == k_text_array);

    CHECK(describe(c.at<Insert>(4).new_tuple) == Cols{"t:1", "t:happy", "t:42", "t:{a,\"b c\"}"});
    CHECK(describe(c.at<Insert>(5).new_tuple) == Cols{"t:2", "n", "n", "n"});
}

TEST_CASE("golden truncate_v1: one Truncate for both tables with CASCADE and RESTART IDENTITY", "[golden]")
{
    auto c = capture("truncate_v1.hex");
    REQUIRE(c.msgs.size() == 13);
    const auto& parent = c.at<Relation>(1);
    CHECK(parent.relname == "parent");
    CHECK(describe_columns(parent) == Cols{"id:20:-1:key", "name:25:-1"});
    CHECK(describe(c.at<Insert>(2).new_tuple) == Cols{"t:1", "t:p1"});
    const auto& child = c.at<Relation>(5);
    CHECK(child.relname == "child");
    CHECK(child.columns.at(1).type_oid == k_int8);
    CHECK(describe(c.at<Insert>(6).new_tuple) == Cols{"t:1", "t:1"});

    // The TRUNCATE xact re-sends both Relation messages before the Truncate.
    CHECK(c.at<Relation>(9).relid == parent.relid);
    CHECK(c.at<Relation>(10).relid == child.relid);
    const auto& t = c.at<Truncate>(11);
    CHECK(!t.xid);
    CHECK(t.flags == (Truncate::k_cascade | Truncate::k_restart_identity));
    CHECK(t.relids == std::vector<RelId>{parent.relid, child.relid});
    CHECK(c.at<Commit>(12).commit_lsn == c.at<Begin>(8).final_lsn);
}

TEST_CASE("golden messages_v1: transactional and non-transactional logical messages", "[golden]")
{
    auto c = capture("messages_v1.hex");
    REQUIRE(c.msgs.size() == 6);
    const auto& b = c.at<Begin>(0);
    const auto& m = c.at<LogicalMessage>(1);
    CHECK(!m.xid);
    CHECK(m.transactional());
    CHECK(m.flags == 1);
    CHECK(m.prefix == "pgshift");
    CHECK(m.content == "txn-msg");
    CHECK(m.lsn == Lsn(0x156F178));
    CHECK(m.lsn < b.final_lsn);
    check_accounts_relation(c.at<Relation>(2));
    CHECK(describe(c.at<Insert>(3).new_tuple) == Cols{"t:10", "t:msg", "t:0.00", "n"});

    // Outside any transaction, and binary content survives untouched.
    const auto& nt = c.at<LogicalMessage>(5);
    CHECK(!nt.transactional());
    CHECK(nt.flags == 0);
    CHECK(nt.prefix == "pgshift-cutover");
    CHECK(nt.content == std::string_view("\x00\xff\x01", 3));
    CHECK(nt.lsn > c.at<Commit>(4).end_lsn);
}

TEST_CASE("golden origin_v1: Origin follows Begin, which carries the origin timestamp", "[golden]")
{
    auto c = capture("origin_v1.hex");
    REQUIRE(c.msgs.size() == 5);
    const auto& b = c.at<Begin>(0);
    CHECK(b.xid == Xid{759});
    CHECK(b.commit_ts == PgTimestamp{820638245678901});
    CHECK(format_timestamptz(b.commit_ts) == "2026-01-02 03:04:05.678901+00");
    const auto& o = c.at<Origin>(1);
    CHECK(o.origin_lsn == Lsn(0xABCDEF0));
    CHECK(o.origin_lsn.str() == "0/ABCDEF0");
    CHECK(o.name == "pgshift_w0");
    CHECK(describe(c.at<Insert>(3).new_tuple) == Cols{"t:11", "t:from-origin", "t:1.00", "n"});
    CHECK(c.at<Commit>(4).commit_ts == b.commit_ts);
}

TEST_CASE("golden binary_v1: binary 'b' columns carry the type's send format", "[golden]")
{
    auto c = capture("binary_v1.hex");
    REQUIRE(c.msgs.size() == 4);
    const auto& i = c.at<Insert>(2);
    // int4 12, text "bin", numeric 12.34 (ndigits 2, weight 0, sign +, dscale 2, digits 12 3400), NULL.
    CHECK(describe(i.new_tuple) == Cols{"b:0000000c", "b:62696e", "b:0002000000000002000c0d48", "n"});
    CHECK(i.new_tuple.columns[1].kind == ColumnKind::binary);
}

TEST_CASE("golden stream_v2: streamed xacts, subtransaction abort, top-level abort", "[golden]")
{
    auto c = capture("stream_v2.hex");
    REQUIRE(c.msgs.size() == 26);
    const Xid top{761};
    const Xid sub{762};
    const Xid sub_after_rollback{763};

    // Block 1 of xact A: every message carries the xid prefix.
    const auto& s1 = c.at<StreamStart>(0);
    CHECK(s1.xid == top);
    CHECK(s1.first_segment == 1);
    const auto& acc = c.at<Relation>(1);
    CHECK(acc.xid == top);
    check_accounts_relation(acc);
    const auto& i1 = c.at<Insert>(2);
    CHECK(i1.xid == top);
    CHECK(describe(i1.new_tuple) == Cols{"t:20", "t:streamed", "t:1.00", "n"});
    const auto& m = c.at<LogicalMessage>(3);
    CHECK(m.xid == top);
    CHECK(m.transactional());
    CHECK(m.prefix == "pgshift");
    CHECK(m.content == "in-stream");
    const auto& ty = c.at<Type>(4);
    CHECK(ty.xid == top);
    CHECK(ty.typname == "mood");
    const auto& big = c.at<Relation>(5);
    CHECK(big.xid == top);
    CHECK(big.relname == "big");
    // The publication's column list leaves payload out.
    CHECK(describe_columns(big) == Cols{"id:23:-1:key", "feeling:" + std::to_string(ty.type_oid) + ":-1"});
    CHECK(describe(c.at<Insert>(6).new_tuple) == Cols{"t:1", "t:ok"});
    c.at<StreamStop>(7);

    // Block 2: changes of the subtransaction carry the subtransaction's xid.
    const auto& s2 = c.at<StreamStart>(8);
    CHECK(s2.xid == top);
    CHECK(s2.first_segment == 0);
    const auto& i2 = c.at<Insert>(9);
    CHECK(i2.xid == sub);
    CHECK(i2.relid == acc.relid);
    CHECK(describe(i2.new_tuple) == Cols{"t:30", "t:in-sub", "t:3.00", "n"});
    const auto& i3 = c.at<Insert>(10);
    CHECK(i3.xid == sub);
    CHECK(i3.relid == big.relid);
    CHECK(describe(i3.new_tuple) == Cols{"t:2", "n"});
    c.at<StreamStop>(11);

    // ROLLBACK TO SAVEPOINT: abort of the subtransaction, between blocks, no LSN (proto 2).
    const auto& a1 = c.at<StreamAbort>(12);
    CHECK(a1.xid == top);
    CHECK(a1.subxid == sub);
    CHECK(!a1.abort_lsn);
    CHECK(!a1.abort_ts);

    // Block 3: the savepoint's replacement subtransaction; Relation re-sent under its xid.
    CHECK(c.at<StreamStart>(13).first_segment == 0);
    CHECK(c.at<Relation>(14).xid == sub_after_rollback);
    const auto& u = c.at<Update>(15);
    CHECK(u.xid == sub_after_rollback);
    CHECK(u.old_kind == OldKind::none);
    CHECK(describe(u.new_tuple) == Cols{"t:20", "t:streamed", "t:1.00", "t:after rollback"});
    c.at<StreamStop>(16);

    const auto& sc = c.at<StreamCommit>(17);
    CHECK(sc.xid == top);
    CHECK(sc.flags == 0);
    CHECK(sc.commit_lsn == Lsn(0x15A53E0));
    CHECK(sc.end_lsn == Lsn(0x15A5418));
    CHECK(sc.commit_ts == PgTimestamp{848607607122665});

    // Xact B: aborted before it was decoded, so its block stops after the schema messages
    // (PostgreSQL's concurrent-abort handling) and the top-level Stream Abort has subxid == xid.
    const auto& s4 = c.at<StreamStart>(18);
    CHECK(s4.xid == Xid{764});
    CHECK(s4.first_segment == 1);
    CHECK(c.at<Type>(19).xid == s4.xid);
    CHECK(c.at<Relation>(20).relid == big.relid);
    c.at<StreamStop>(21);
    const auto& a2 = c.at<StreamAbort>(22);
    CHECK(a2.xid == s4.xid);
    CHECK(a2.subxid == s4.xid);

    // Xact C, small: ordinary Begin/Commit and no xid prefixes, even under proto 2.
    const auto& b = c.at<Begin>(23);
    CHECK(b.xid == Xid{765});
    CHECK(b.final_lsn > sc.end_lsn);
    const auto& i4 = c.at<Insert>(24);
    CHECK(!i4.xid);
    CHECK(describe(i4.new_tuple) == Cols{"t:21", "t:plain v2", "t:2.00", "n"});
    check_xact_pair(b, c.at<Commit>(25));
}

TEST_CASE("decoded views point into the caller's buffer", "[golden]")
{
    auto c = capture("dml_pk_v1.hex");
    const auto& rel = c.at<Relation>(1);
    const auto& bytes = c.raw[1].bytes;
    auto inside = [&](std::string_view v) {
        return v.data() >= bytes.data() && v.data() + v.size() <= bytes.data() + bytes.size();
    };
    CHECK(inside(rel.relname));
    CHECK(inside(rel.columns[0].name));
    const auto& ins = c.at<Insert>(2);
    const auto& ibytes = c.raw[2].bytes;
    CHECK(ins.new_tuple.columns[1].data.data() >= ibytes.data());
    CHECK(ins.new_tuple.columns[1].data.data() < ibytes.data() + ibytes.size());
}
