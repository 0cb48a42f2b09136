// Malformed-input tests: every truncation, trailing bytes, unknown types, kinds, markers and flags.
#include "golden.hpp"

#include "pgshift/common/errors.hpp"

#include "error_matcher.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace pgshift;
using namespace pgshift::protocol;
using pgshift::protocol::test::describe;
using pgshift::protocol::test::GoldenMessage;
using pgshift::protocol::test::WireBuilder;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

DecodeContext ctx_v(int proto, bool in_stream = false, bool parallel = false)
{
    DecodeContext c;
    c.proto_version = proto;
    c.in_stream = in_stream;
    c.parallel_stream = parallel;
    return c;
}

/// Messages the goldens cannot contain (two-phase is off in the capture, parallel streaming
/// needs PG16), built by hand from the layouts in proto.c.
std::vector<GoldenMessage> hand_built()
{
    auto msg = [](const char* name, std::string bytes, DecodeContext ctx) {
        GoldenMessage m;
        m.file = name;
        m.bytes = std::move(bytes);
        m.ctx = ctx;
        return m;
    };
    std::vector<GoldenMessage> v;
    v.push_back(msg("begin_prepare",
                    WireBuilder().u8('b').u64(0x1000).u64(0x1050).i64(7).u32(900).cstr("gid-1").str(), ctx_v(3)));
    v.push_back(msg("prepare",
                    WireBuilder().u8('P').u8(0).u64(0x1000).u64(0x1050).i64(7).u32(900).cstr("gid-1").str(), ctx_v(3)));
    v.push_back(msg("stream_prepare",
                    WireBuilder().u8('p').u8(0).u64(0x1000).u64(0x1050).i64(7).u32(900).cstr("gid-1").str(), ctx_v(3)));
    v.push_back(msg("commit_prepared",
                    WireBuilder().u8('K').u8(0).u64(0x2000).u64(0x2060).i64(8).u32(900).cstr("gid-1").str(), ctx_v(3)));
    v.push_back(msg("rollback_prepared",
                    WireBuilder().u8('r').u8(0).u64(0x1050).u64(0x2060).i64(7).i64(9).u32(900).cstr("gid-1").str(),
                    ctx_v(3)));
    v.push_back(msg("stream_abort_parallel",
                    WireBuilder().u8('A').u32(901).u32(902).u64(0x3000).i64(10).str(), ctx_v(4, false, true)));
    v.push_back(msg("stream_truncate",
                    WireBuilder().u8('T').u32(901).i32(1).u8(Truncate::k_cascade).u32(16400).str(), ctx_v(2, true)));
    v.push_back(msg("stream_delete",
                    WireBuilder().u8('D').u32(902).u32(16400).u8('K').i16(2).u8('t').i32(2).raw("42").u8('n').str(),
                    ctx_v(2, true)));
    v.push_back(msg("origin", WireBuilder().u8('O').u64(0x5000).cstr("").str(), ctx_v(1)));
    return v;
}

std::vector<GoldenMessage> all_messages()
{
    auto v = test::load_all_golden();
    for (auto& m : hand_built())
        v.push_back(std::move(m));
    return v;
}

std::string where(const GoldenMessage& m)
{
    return m.file + ":" + std::to_string(m.line);
}

/// The message at `index` (0-based, comments skipped) of a golden file, as a mutable copy.
GoldenMessage golden_at(const char* file, std::size_t index)
{
    for (const auto& f : test::golden_files())
        if (std::string_view(f.name) == file)
            return test::load_golden(f).at(index);
    throw std::logic_error(std::string("no golden file ") + file);
}

void poke(std::string& bytes, std::size_t offset, std::string_view with)
{
    REQUIRE(offset + with.size() <= bytes.size());
    bytes.replace(offset, with.size(), with);
}

} // namespace

TEST_CASE("hand-built messages decode to their fields", "[malformed]")
{
    auto v = hand_built();
    auto bp = std::get<BeginPrepare>(decode(v[0].bytes, v[0].ctx));
    CHECK(bp.prepare_lsn == Lsn(0x1000));
    CHECK(bp.end_lsn == Lsn(0x1050));
    CHECK(bp.prepare_ts == PgTimestamp{7});
    CHECK(bp.xid == Xid{900});
    CHECK(bp.gid == "gid-1");

    auto p = std::get<Prepare>(decode(v[1].bytes, v[1].ctx));
    CHECK(!p.streamed);
    CHECK(p.end_lsn == Lsn(0x1050));
    CHECK(p.gid == "gid-1");
    CHECK(type_of(Message(p)) == MsgType::prepare);

    auto sp = std::get<Prepare>(decode(v[2].bytes, v[2].ctx));
    CHECK(sp.streamed);
    CHECK(type_of(Message(sp)) == MsgType::stream_prepare);

    auto cp = std::get<CommitPrepared>(decode(v[3].bytes, v[3].ctx));
    CHECK(cp.commit_lsn == Lsn(0x2000));
    CHECK(cp.end_lsn == Lsn(0x2060));
    CHECK(cp.xid == Xid{900});

    auto rp = std::get<RollbackPrepared>(decode(v[4].bytes, v[4].ctx));
    CHECK(rp.prepare_end_lsn == Lsn(0x1050));
    CHECK(rp.rollback_end_lsn == Lsn(0x2060));
    CHECK(rp.prepare_ts == PgTimestamp{7});
    CHECK(rp.rollback_ts == PgTimestamp{9});

    auto a = std::get<StreamAbort>(decode(v[5].bytes, v[5].ctx));
    CHECK(a.xid == Xid{901});
    CHECK(a.subxid == Xid{902});
    REQUIRE(a.abort_lsn);
    CHECK(*a.abort_lsn == Lsn(0x3000));
    REQUIRE(a.abort_ts);
    CHECK(*a.abort_ts == PgTimestamp{10});

    auto t = std::get<Truncate>(decode(v[6].bytes, v[6].ctx));
    CHECK(t.xid == Xid{901});
    CHECK(t.flags == Truncate::k_cascade);
    CHECK(t.relids == std::vector<RelId>{RelId{16400}});

    auto d = std::get<Delete>(decode(v[7].bytes, v[7].ctx));
    CHECK(d.xid == Xid{902});
    CHECK(d.relid == RelId{16400});
    CHECK(describe(d.old_tuple) == std::vector<std::string>{"t:42", "n"});

    auto o = std::get<Origin>(decode(v[8].bytes, v[8].ctx));
    CHECK(o.name.empty());
}

TEST_CASE("every truncation of every message is a ProtocolError naming the message", "[malformed]")
{
    std::vector<std::string> failures;
    std::size_t tried = 0;
    for (const auto& m : all_messages()) {
        for (std::size_t len = 0; len < m.bytes.size(); ++len) {
            // A separate allocation of exactly `len` bytes, so a read past it is a real overrun.
            std::string prefix = m.bytes.substr(0, len);
            ++tried;
            try {
                (void)decode(prefix, m.ctx);
                failures.push_back(where(m) + " decoded with only " + std::to_string(len) + " bytes");
            } catch (const ProtocolError& e) {
                std::string_view what = e.what();
                if (what.rfind("pgoutput", 0) != 0 || what.find(" at offset ") == std::string_view::npos)
                    failures.push_back(where(m) + " len " + std::to_string(len) + ": badly worded: " + e.what());
            } catch (const std::exception& e) {
                failures.push_back(where(m) + " len " + std::to_string(len) + ": not a ProtocolError: " + e.what());
            }
        }
    }
    INFO("tried " << tried << " truncations");
    CHECK(tried > 1000);
    for (const auto& f : failures)
        FAIL_CHECK(f);
    CHECK(failures.empty());
}

TEST_CASE("one extra trailing byte after any message is a ProtocolError", "[malformed]")
{
    for (const auto& m : all_messages()) {
        INFO(where(m));
        // Nothing real, and a NUL (which a string reader could swallow).
        for (char extra : {'\0', 'x'}) {
            std::string longer = m.bytes + extra;
            CHECK_PROTOCOL_ERROR(decode(longer, m.ctx), Contains("1 trailing bytes"));
        }
    }
}

TEST_CASE("unknown message type bytes are rejected", "[malformed]")
{
    const std::set<char> known = {'B', 'C', 'O', 'R', 'Y', 'I', 'U', 'D', 'T', 'M',
                                  'S', 'E', 'c', 'A', 'b', 'P', 'p', 'K', 'r'};
    for (int b = 0; b < 256; ++b) {
        char c = static_cast<char>(b);
        if (known.count(c) != 0)
            continue;
        INFO("type byte " << b);
        std::string bytes = std::string(1, c) + std::string(40, '\0');
        CHECK_PROTOCOL_ERROR(decode(bytes, ctx_v(4, true, true)), Contains("unknown message type"));
    }
    CHECK_THROWS_WITH(decode("Z", ctx_v(1)), "pgoutput: unknown message type 'Z' (0x5a) at offset 1 of 1");
    CHECK_PROTOCOL_ERROR(decode("", ctx_v(1)), StartsWith("pgoutput: message type: truncated"));
}

TEST_CASE("message types newer than the negotiated protocol are rejected", "[malformed]")
{
    CHECK_PROTOCOL_ERROR(decode("E", ctx_v(1)),
                         Contains("pgoutput Stream Stop: message type: not defined in protocol version 1"));
    CHECK_NOTHROW(decode("E", ctx_v(2)));
    auto v = hand_built();
    CHECK_PROTOCOL_ERROR(decode(v[0].bytes, ctx_v(2)), Contains("pgoutput Begin Prepare"));
}

TEST_CASE("unknown tuple column kinds are rejected", "[malformed]")
{
    auto ins = golden_at("dml_pk_v1.hex", 2); // I relid 'N' ncols, then the first kind at 8
    REQUIRE(ins.bytes[8] == 't');
    for (char kind : {'x', '\0', 'N', 'T'}) {
        auto bad = ins.bytes;
        bad[8] = kind;
        CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx),
                             StartsWith("pgoutput Insert: tuple column kind: unknown kind") && Contains("column 0"));
    }
    // The last column ('n' for NULL note) too.
    auto bad = ins.bytes;
    REQUIRE(bad.back() == 'n');
    bad.back() = 'z';
    CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx), Contains("unknown kind 'z' (0x7a) for column 3"));
}

TEST_CASE("unknown old/new tuple markers are rejected", "[malformed]")
{
    auto upd_key = golden_at("dml_pk_v1.hex", 9); // U relid 'K' <old> 'N' <new>
    REQUIRE(upd_key.bytes[5] == 'K');
    REQUIRE(upd_key.bytes[17] == 'N');
    auto bad = upd_key.bytes;
    bad[5] = 'X';
    CHECK_THROWS_WITH(decode(bad, upd_key.ctx),
                      "pgoutput Update: tuple marker: expected 'K', 'O' or 'N', got 'X' (0x58) at offset 6 of 43");
    bad = upd_key.bytes;
    bad[17] = 'K'; // an old tuple must be followed by the new one
    CHECK_PROTOCOL_ERROR(decode(bad, upd_key.ctx), Contains("expected 'N', got 'K'"));

    auto del = golden_at("dml_pk_v1.hex", 12);
    REQUIRE(del.bytes[5] == 'K');
    bad = del.bytes;
    bad[5] = 'N'; // a Delete without an old tuple does not exist
    CHECK_PROTOCOL_ERROR(decode(bad, del.ctx),
                         StartsWith("pgoutput Delete: tuple marker: expected 'K' or 'O'"));

    auto ins = golden_at("dml_pk_v1.hex", 2);
    bad = ins.bytes;
    bad[5] = 'K';
    CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx), StartsWith("pgoutput Insert: tuple marker: expected 'N'"));
}

TEST_CASE("undefined flag bits and values are rejected", "[malformed]")
{
    auto commit = golden_at("dml_pk_v1.hex", 4);
    auto bad = commit.bytes;
    bad[1] = 1;
    CHECK_PROTOCOL_ERROR(decode(bad, commit.ctx), StartsWith("pgoutput Commit: flags: unknown flags"));

    auto scommit = golden_at("stream_v2.hex", 17);
    REQUIRE(scommit.bytes[0] == 'c');
    bad = scommit.bytes;
    bad[5] = 2;
    CHECK_PROTOCOL_ERROR(decode(bad, scommit.ctx), StartsWith("pgoutput Stream Commit: flags"));

    auto trunc = golden_at("truncate_v1.hex", 11);
    REQUIRE(trunc.bytes[5] == 3);
    bad = trunc.bytes;
    bad[5] = 7;
    CHECK_PROTOCOL_ERROR(decode(bad, trunc.ctx), StartsWith("pgoutput Truncate: flags: unknown flags"));

    auto msg = golden_at("messages_v1.hex", 1);
    bad = msg.bytes;
    bad[1] = 3;
    CHECK_PROTOCOL_ERROR(decode(bad, msg.ctx), StartsWith("pgoutput Message: flags: unknown flags"));

    auto rel = golden_at("dml_pk_v1.hex", 1); // R relid "public" "accounts" replident@21 ncols@22 flags@24
    REQUIRE(rel.bytes[21] == 'd');
    bad = rel.bytes;
    bad[21] = 'x';
    CHECK_PROTOCOL_ERROR(decode(bad, rel.ctx),
                         StartsWith("pgoutput Relation: replica identity: unknown value 'x'"));
    bad = rel.bytes;
    bad[24] = 2;
    CHECK_PROTOCOL_ERROR(decode(bad, rel.ctx), StartsWith("pgoutput Relation: column flags"));

    auto start = golden_at("stream_v2.hex", 0);
    bad = start.bytes;
    bad[5] = 2;
    CHECK_PROTOCOL_ERROR(decode(bad, start.ctx), StartsWith("pgoutput Stream Start: first_segment"));

    auto v = hand_built();
    for (std::size_t i : {1u, 2u, 3u, 4u}) { // two-phase messages: flags must be 0
        bad = v[i].bytes;
        bad[1] = 1;
        CHECK_PROTOCOL_ERROR(decode(bad, v[i].ctx), Contains(": flags: unknown flags"));
    }

    auto begin = golden_at("dml_pk_v1.hex", 0);
    bad = begin.bytes;
    poke(bad, 1, std::string(8, '\0'));
    CHECK_PROTOCOL_ERROR(decode(bad, begin.ctx), StartsWith("pgoutput Begin: final_lsn: not set"));
}

TEST_CASE("negative counts and lengths are rejected", "[malformed]")
{
    const std::string minus1_16("\xff\xff", 2);
    const std::string minus1_32("\xff\xff\xff\xff", 4);

    auto rel = golden_at("dml_pk_v1.hex", 1);
    auto bad = rel.bytes;
    poke(bad, 22, minus1_16);
    CHECK_PROTOCOL_ERROR(decode(bad, rel.ctx),
                         StartsWith("pgoutput Relation: column count: negative (-1)"));

    auto ins = golden_at("dml_pk_v1.hex", 2);
    bad = ins.bytes;
    poke(bad, 6, minus1_16);
    CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx),
                         StartsWith("pgoutput Insert: tuple column count: negative (-1)"));
    bad = ins.bytes;
    poke(bad, 9, minus1_32);
    CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx),
                         StartsWith("pgoutput Insert: tuple column length: negative (-1)"));

    auto trunc = golden_at("truncate_v1.hex", 11);
    bad = trunc.bytes;
    poke(bad, 1, minus1_32);
    CHECK_PROTOCOL_ERROR(decode(bad, trunc.ctx),
                         StartsWith("pgoutput Truncate: relation count: negative (-1)"));

    auto msg = golden_at("messages_v1.hex", 1); // M flags lsn "pgshift" len@18
    bad = msg.bytes;
    poke(bad, 18, minus1_32);
    CHECK_PROTOCOL_ERROR(decode(bad, msg.ctx),
                         StartsWith("pgoutput Message: content length: negative (-1)"));
}

TEST_CASE("huge counts fail as truncations without allocating for them", "[malformed]")
{
    auto trunc = golden_at("truncate_v1.hex", 11);
    auto bad = trunc.bytes;
    poke(bad, 1, std::string("\x7f\xff\xff\xff", 4));
    CHECK_PROTOCOL_ERROR(decode(bad, trunc.ctx), Contains("cannot fit"));

    auto ins = golden_at("dml_pk_v1.hex", 2);
    bad = ins.bytes;
    poke(bad, 6, std::string("\x7f\xff", 2));
    CHECK_PROTOCOL_ERROR(decode(bad, ins.ctx), StartsWith("pgoutput Insert: tuple columns: truncated"));

    auto rel = golden_at("dml_pk_v1.hex", 1);
    bad = rel.bytes;
    poke(bad, 22, std::string("\x00\x09", 2)); // 9 columns cannot fit in the bytes of 4
    CHECK_PROTOCOL_ERROR(decode(bad, rel.ctx), StartsWith("pgoutput Relation: columns: truncated"));

    auto ins_len = golden_at("dml_pk_v1.hex", 2);
    bad = ins_len.bytes;
    poke(bad, 9, std::string("\x7f\xff\xff\xff", 4));
    CHECK_PROTOCOL_ERROR(decode(bad, ins_len.ctx),
                         StartsWith("pgoutput Insert: tuple column value: truncated"));
}

TEST_CASE("Stream Abort carries abort_lsn/abort_ts only with protocol 4 and parallel streaming", "[malformed]")
{
    auto golden = golden_at("stream_v2.hex", 12); // 'A' xid subxid, from a proto 2 capture
    REQUIRE(golden.bytes.size() == 9);
    CHECK_NOTHROW(decode(golden.bytes, ctx_v(4, false, false)));
    CHECK_NOTHROW(decode(golden.bytes, ctx_v(3, false, true))); // parallel needs proto 4
    CHECK_PROTOCOL_ERROR(decode(golden.bytes, ctx_v(4, false, true)),
                         StartsWith("pgoutput Stream Abort: abort_lsn: truncated"));

    auto parallel = hand_built()[5];
    CHECK_PROTOCOL_ERROR(decode(parallel.bytes, ctx_v(4, false, false)),
                         StartsWith("pgoutput Stream Abort: end of message: 16 trailing bytes"));
}

TEST_CASE("the Xid prefix is read only inside a stream", "[malformed]")
{
    // The same Insert with and without the prefix.
    auto plain = golden_at("dml_pk_v1.hex", 2);
    auto streamed = plain.bytes.substr(0, 1) + WireBuilder().u32(4242).str() + plain.bytes.substr(1);
    auto a = std::get<Insert>(decode(plain.bytes, ctx_v(2, false)));
    auto b = std::get<Insert>(decode(streamed, ctx_v(2, true)));
    CHECK(!a.xid);
    REQUIRE(b.xid);
    CHECK(*b.xid == Xid{4242});
    CHECK(a.relid == b.relid);
    CHECK(describe(a.new_tuple) == describe(b.new_tuple));
    CHECK_THROWS_AS(decode(streamed, ctx_v(2, false)), ProtocolError);
}
