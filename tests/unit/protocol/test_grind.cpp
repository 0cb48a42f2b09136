// Grind tests: golden streams cut at every point and in random chunks, and round-tripped through MessageLog.
//
// Design notes
// - A golden file becomes a byte stream of length-prefixed frames (Int32 payload length, then a
//   CopyBoth payload: XLogData 'w' around each golden message, a keepalive 'k' every few messages).
//   A small incremental framer reassembles it from chunks; each frame is decoded by
//   decode_server_frame and protocol::decode, with in_stream tracked from the decoded messages as
//   the reader does. The result must equal the direct decode of the golden message, field for field.
// - Messages are compared through describe(), a canonical dump of every field, so a view left
//   pointing at a reused or freed chunk shows as a difference (and as an ASan report in a
//   sanitizer build: every chunk is its own allocation, freed right after it is fed).
// - The real reader gets whole CopyData messages from libpq (PQgetCopyData); the framer here is the
//   test's, standing in for any transport that delivers bytes in arbitrary pieces.
// - Every truncation of every golden message is covered by test_malformed.cpp, not repeated here.
#include "golden.hpp"

#include "pgshift/common/byte_reader.hpp"
#include "pgshift/common/errors.hpp"
#include "pgshift/protocol/frames.hpp"
#include "pgshift/queue/message_log.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace pgshift::protocol::test {
namespace {

using test::describe; // the TupleData overload from golden.hpp, next to the ones below

// ---- canonical dump -----------------------------------------------------------------------

std::string str(std::string_view s)
{
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return out + '"';
}
std::string str(Lsn v) { return v.str(); }
std::string str(PgTimestamp v) { return std::to_string(v.micros); }
std::string str(Xid v) { return std::to_string(v.value); }
std::string str(RelId v) { return std::to_string(v.value); }
std::string str(std::uint8_t v) { return std::to_string(static_cast<unsigned>(v)); }
std::string str(std::uint32_t v) { return std::to_string(v); }
std::string str(std::int32_t v) { return std::to_string(v); }
std::string str(bool v) { return v ? "true" : "false"; }

/// Wire-byte enums (ReplicaIdentity, OldKind) by their byte value.
template <typename E>
    requires std::is_enum_v<E>
std::string str(E v)
{
    return std::to_string(static_cast<unsigned>(static_cast<unsigned char>(v)));
}

template <typename T>
std::string str(const std::optional<T>& v)
{
    return v ? str(*v) : "-";
}

std::string str(const TupleData& t)
{
    std::string out = "[";
    for (const auto& c : describe(t))
        out += (out.size() > 1 ? "," : "") + str(std::string_view(c));
    return out + "]";
}

std::string str(const std::vector<RelId>& v)
{
    std::string out = "[";
    for (auto r : v)
        out += (out.size() > 1 ? "," : "") + str(r);
    return out + "]";
}

std::string str(const std::vector<RelationColumn>& v)
{
    std::string out = "[";
    for (const auto& c : v)
        out += (out.size() > 1 ? "," : "") + str(c.flags) + ":" + str(c.name) + ":" + str(c.type_oid) + ":" +
               str(c.type_modifier);
    return out + "]";
}

/// "Name{field=value, ...}", built field by field.
class Dump {
public:
    explicit Dump(const char* type) : out_(type) { out_ += '{'; }
    template <typename T>
    Dump& f(const char* name, const T& v)
    {
        if (out_.back() != '{')
            out_ += ", ";
        out_ += name;
        out_ += '=';
        out_ += str(v);
        return *this;
    }
    [[nodiscard]] std::string done() { return out_ + '}'; }

private:
    std::string out_;
};

// One overload per message struct: a new message type without one does not compile.
std::string dump(const Begin& m)
{
    return Dump("Begin").f("final_lsn", m.final_lsn).f("commit_ts", m.commit_ts).f("xid", m.xid).done();
}
std::string dump(const Commit& m)
{
    return Dump("Commit")
        .f("flags", m.flags)
        .f("commit_lsn", m.commit_lsn)
        .f("end_lsn", m.end_lsn)
        .f("commit_ts", m.commit_ts)
        .done();
}
std::string dump(const Origin& m)
{
    return Dump("Origin").f("origin_lsn", m.origin_lsn).f("name", m.name).done();
}
std::string dump(const Relation& m)
{
    return Dump("Relation")
        .f("xid", m.xid)
        .f("relid", m.relid)
        .f("nspname", m.nspname)
        .f("relname", m.relname)
        .f("replident", m.replident)
        .f("columns", m.columns)
        .done();
}
std::string dump(const Type& m)
{
    return Dump("Type")
        .f("xid", m.xid)
        .f("type_oid", m.type_oid)
        .f("nspname", m.nspname)
        .f("typname", m.typname)
        .done();
}
std::string dump(const Insert& m)
{
    return Dump("Insert").f("xid", m.xid).f("relid", m.relid).f("new", m.new_tuple).done();
}
std::string dump(const Update& m)
{
    return Dump("Update")
        .f("xid", m.xid)
        .f("relid", m.relid)
        .f("old_kind", m.old_kind)
        .f("old", m.old_tuple)
        .f("new", m.new_tuple)
        .done();
}
std::string dump(const Delete& m)
{
    return Dump("Delete").f("xid", m.xid).f("relid", m.relid).f("old_kind", m.old_kind).f("old", m.old_tuple).done();
}
std::string dump(const Truncate& m)
{
    return Dump("Truncate").f("xid", m.xid).f("flags", m.flags).f("relids", m.relids).done();
}
std::string dump(const LogicalMessage& m)
{
    return Dump("Message")
        .f("xid", m.xid)
        .f("flags", m.flags)
        .f("lsn", m.lsn)
        .f("prefix", m.prefix)
        .f("content", m.content)
        .done();
}
std::string dump(const StreamStart& m)
{
    return Dump("StreamStart").f("xid", m.xid).f("first_segment", m.first_segment).done();
}
std::string dump(const StreamStop&)
{
    return Dump("StreamStop").done();
}
std::string dump(const StreamCommit& m)
{
    return Dump("StreamCommit")
        .f("xid", m.xid)
        .f("flags", m.flags)
        .f("commit_lsn", m.commit_lsn)
        .f("end_lsn", m.end_lsn)
        .f("commit_ts", m.commit_ts)
        .done();
}
std::string dump(const StreamAbort& m)
{
    return Dump("StreamAbort")
        .f("xid", m.xid)
        .f("subxid", m.subxid)
        .f("abort_lsn", m.abort_lsn)
        .f("abort_ts", m.abort_ts)
        .done();
}
std::string dump(const BeginPrepare& m)
{
    return Dump("BeginPrepare")
        .f("prepare_lsn", m.prepare_lsn)
        .f("end_lsn", m.end_lsn)
        .f("prepare_ts", m.prepare_ts)
        .f("xid", m.xid)
        .f("gid", m.gid)
        .done();
}
std::string dump(const Prepare& m)
{
    return Dump(m.streamed ? "StreamPrepare" : "Prepare")
        .f("flags", m.flags)
        .f("prepare_lsn", m.prepare_lsn)
        .f("end_lsn", m.end_lsn)
        .f("prepare_ts", m.prepare_ts)
        .f("xid", m.xid)
        .f("gid", m.gid)
        .done();
}
std::string dump(const CommitPrepared& m)
{
    return Dump("CommitPrepared")
        .f("flags", m.flags)
        .f("commit_lsn", m.commit_lsn)
        .f("end_lsn", m.end_lsn)
        .f("commit_ts", m.commit_ts)
        .f("xid", m.xid)
        .f("gid", m.gid)
        .done();
}
std::string dump(const RollbackPrepared& m)
{
    return Dump("RollbackPrepared")
        .f("flags", m.flags)
        .f("prepare_end_lsn", m.prepare_end_lsn)
        .f("rollback_end_lsn", m.rollback_end_lsn)
        .f("prepare_ts", m.prepare_ts)
        .f("rollback_ts", m.rollback_ts)
        .f("xid", m.xid)
        .f("gid", m.gid)
        .done();
}

/// Canonical text of a decoded message: its type and every field, strings escaped.
std::string describe(const Message& m)
{
    return std::visit([](const auto& v) { return dump(v); }, m);
}

std::string describe_header(const XLogData& f)
{
    return Dump("XLogData").f("wal_start", f.wal_start).f("wal_end", f.wal_end).f("send_time", f.send_time).done();
}

std::string describe(const Keepalive& f)
{
    return Dump("Keepalive")
        .f("wal_end", f.wal_end)
        .f("send_time", f.send_time)
        .f("reply_requested", f.reply_requested)
        .done();
}

// ---- framing --------------------------------------------------------------------------------

/// Reassembles frames (Int32 payload length, then the payload: CopyData without its type byte)
/// from a byte stream cut anywhere. Frames wholly inside a chunk are handed over in place; only a
/// frame that spans chunks is copied. Views passed to on_frame are valid during that call only.
class Framer {
public:
    static constexpr std::size_t k_max_frame = 1u << 30;

    template <typename OnFrame>
    void feed(std::string_view in, OnFrame&& on_frame)
    {
        if (!buf_.empty()) {
            // Top up the pending frame, its header first, then exactly its body and no more.
            if (buf_.size() < 4) {
                auto take = std::min(4 - buf_.size(), in.size());
                buf_.append(in.substr(0, take));
                in.remove_prefix(take);
                if (buf_.size() < 4)
                    return;
            }
            auto need = 4 + frame_length(buf_);
            auto take = std::min(need - buf_.size(), in.size());
            buf_.append(in.substr(0, take));
            in.remove_prefix(take);
            if (buf_.size() < need)
                return;
            on_frame(std::string_view(buf_).substr(4));
            buf_.clear();
        }
        while (in.size() >= 4) {
            auto len = frame_length(in);
            if (in.size() - 4 < len)
                break;
            on_frame(in.substr(4, len));
            in.remove_prefix(4 + len);
        }
        buf_.assign(in);
    }

    /// Bytes of an incomplete frame held back; 0 at a frame boundary.
    [[nodiscard]] std::size_t buffered() const { return buf_.size(); }

private:
    static std::size_t frame_length(std::string_view header)
    {
        ByteReader r(header.substr(0, 4));
        auto len = r.read_i32("frame length");
        if (len < 0 || static_cast<std::size_t>(len) > k_max_frame)
            r.fail("frame length", "out of range (" + std::to_string(len) + ")");
        return static_cast<std::size_t>(len);
    }

    std::string buf_;
};

void put_frame(std::string& out, std::string_view payload)
{
    put_be(out, payload.size(), 4);
    out.append(payload);
}

/// A golden file as a framed byte stream, and the description of every frame in it, made from the
/// direct decode of each golden message under the context the capture loader gave it.
struct GoldenStream {
    std::string name;
    int proto_version = 1;
    std::string bytes;
    std::vector<std::string> expected;
};

GoldenStream make_stream(const GoldenFile& file)
{
    GoldenStream s;
    s.name = file.name;
    s.proto_version = file.proto_version;
    auto msgs = load_golden(file);
    std::uint64_t wal = 0x1000000;
    for (std::size_t i = 0; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        XLogData x{Lsn(wal), Lsn(wal + m.bytes.size()), PgTimestamp{1000 + static_cast<std::int64_t>(i)}, {}};
        wal += m.bytes.size();
        std::string frame = "w";
        put_be(frame, x.wal_start.value(), 8);
        put_be(frame, x.wal_end.value(), 8);
        put_be(frame, static_cast<std::uint64_t>(x.send_time.micros), 8);
        frame += m.bytes;
        put_frame(s.bytes, frame);
        s.expected.push_back(describe_header(x) + " " + describe(decode(m.bytes, m.ctx)));
        if (i % 4 == 3) {
            Keepalive k{Lsn(wal), PgTimestamp{2000 + static_cast<std::int64_t>(i)}, i % 8 == 7};
            std::string ka = "k";
            put_be(ka, k.wal_end.value(), 8);
            put_be(ka, static_cast<std::uint64_t>(k.send_time.micros), 8);
            ka.push_back(k.reply_requested ? 1 : 0);
            put_frame(s.bytes, ka);
            s.expected.push_back(describe(k));
        }
    }
    return s;
}

/// The receiving side: frames in, descriptions out, in_stream tracked from the messages themselves.
struct Receiver {
    DecodeContext ctx;
    std::vector<std::string> got;

    explicit Receiver(int proto_version) { ctx.proto_version = proto_version; }

    void on_frame(std::string_view frame)
    {
        auto f = decode_server_frame(frame);
        if (const auto* k = std::get_if<Keepalive>(&f)) {
            got.push_back(describe(*k));
            return;
        }
        const auto& x = std::get<XLogData>(f);
        auto m = decode(x.payload, ctx);
        got.push_back(describe_header(x) + " " + describe(m));
        if (std::holds_alternative<StreamStart>(m))
            ctx.in_stream = true;
        else if (std::holds_alternative<StreamStop>(m))
            ctx.in_stream = false;
    }
};

/// Feeds `s.bytes` cut at `cuts` (increasing offsets), each piece a separate allocation freed
/// right after it is fed. Returns the descriptions and whether the framer ended on a boundary.
std::vector<std::string> receive(const GoldenStream& s, const std::vector<std::size_t>& cuts, bool& clean_end)
{
    Framer framer;
    Receiver rx(s.proto_version);
    std::size_t from = 0;
    auto feed_to = [&](std::size_t to) {
        {
            std::string piece = s.bytes.substr(from, to - from);
            framer.feed(piece, [&](std::string_view f) { rx.on_frame(f); });
        }
        from = to;
    };
    for (auto c : cuts)
        feed_to(c);
    feed_to(s.bytes.size());
    clean_end = framer.buffered() == 0;
    return std::move(rx.got);
}

std::vector<GoldenStream> all_streams()
{
    std::vector<GoldenStream> v;
    for (const auto& f : golden_files())
        v.push_back(make_stream(f));
    return v;
}

} // namespace
} // namespace pgshift::protocol::test

using namespace pgshift;
using namespace pgshift::protocol;
using namespace pgshift::protocol::test;

TEST_CASE("grind: describe() shows every field, so it can tell messages apart", "[grind]")
{
    Insert a;
    a.relid = RelId{16394};
    a.new_tuple.columns = {{ColumnKind::text, "a,b"}, {ColumnKind::null, {}}};
    Insert b = a;
    b.new_tuple.columns[0].data = "a";
    Insert c = a;
    c.xid = Xid{0};
    CHECK(describe(Message(a)) == R"(Insert{xid=-, relid=16394, new=["t:a,b","n"]})");
    CHECK(describe(Message(a)) != describe(Message(b)));
    CHECK(describe(Message(a)) != describe(Message(c)));
    StreamAbort s;
    s.abort_lsn = Lsn(0x16B3748);
    CHECK(describe(Message(s)) == "StreamAbort{xid=0, subxid=0, abort_lsn=0/16B3748, abort_ts=-}");
    LogicalMessage m;
    m.content = std::string_view("\0\xff\"", 3);
    CHECK_THAT(describe(Message(m)), Catch::Matchers::Contains(R"(content="\x00\xff\"")"));
}

TEST_CASE("grind: the framer hands over whole frames and holds back a partial one", "[grind]")
{
    std::string bytes;
    put_frame(bytes, "abc");
    put_frame(bytes, "");
    put_frame(bytes, "defg");
    Framer framer;
    std::vector<std::string> got;
    auto collect = [&](std::string_view f) { got.emplace_back(f); };
    REQUIRE(bytes.size() == 7 + 4 + 8);
    framer.feed(std::string_view(bytes).substr(0, 13), collect); // "abc", "" and 2 bytes of a header
    CHECK(got == std::vector<std::string>{"abc", ""});
    CHECK(framer.buffered() == 2);
    framer.feed(std::string_view(bytes).substr(13, 4), collect); // the rest of the header, 2 body bytes
    CHECK(got.size() == 2);
    CHECK(framer.buffered() == 6);
    framer.feed(std::string_view(bytes).substr(17), collect);
    CHECK(got == std::vector<std::string>{"abc", "", "defg"});
    CHECK(framer.buffered() == 0);

    Framer bad;
    std::string negative;
    put_be(negative, 0xffffffffu, 4);
    CHECK_THROWS_AS(bad.feed(negative, collect), ProtocolError);
}

TEST_CASE("grind: a golden stream cut at every point decodes as the unsplit stream", "[grind]")
{
    std::size_t runs = 0;
    for (const auto& s : all_streams()) {
        INFO(s.name << " (" << s.bytes.size() << " bytes, " << s.expected.size() << " frames)");
        bool clean = false;
        REQUIRE(receive(s, {}, clean) == s.expected);
        REQUIRE(clean);
        for (std::size_t cut = 0; cut <= s.bytes.size(); ++cut) {
            INFO("cut at " << cut);
            auto got = receive(s, {cut}, clean);
            ++runs;
            // REQUIRE: one failing cut is enough to diagnose, and the rest would only repeat it.
            REQUIRE(clean);
            REQUIRE(got == s.expected);
        }
        // Cut short by one byte: the framer must hold the last frame back, not decode a prefix.
        GoldenStream shorter = s;
        shorter.bytes.pop_back();
        auto got = receive(shorter, {}, clean);
        CHECK_FALSE(clean);
        CHECK(got.size() == s.expected.size() - 1);
    }
    CHECK(runs > 5000);
}

TEST_CASE("grind: a golden stream in random chunks decodes as the unsplit stream", "[grind]")
{
    constexpr unsigned k_seed = 20260121;
    constexpr int k_chunkings = 300;
    std::mt19937 rng(k_seed);
    for (const auto& s : all_streams()) {
        INFO(s.name << ", seed " << k_seed);
        for (int n = 0; n < k_chunkings; ++n) {
            // Mostly tiny pieces (headers cut everywhere), some of frame size, some large.
            std::size_t max_piece = n % 3 == 0 ? 3 : n % 3 == 1 ? 64 : s.bytes.size();
            std::vector<std::size_t> cuts;
            for (std::size_t at = 0;;) {
                at += 1 + rng() % max_piece;
                if (at >= s.bytes.size())
                    break;
                cuts.push_back(at);
            }
            INFO("chunking " << n << ": " << cuts.size() + 1 << " pieces");
            bool clean = false;
            auto got = receive(s, cuts, clean);
            REQUIRE(clean);
            REQUIRE(got == s.expected);
        }
        // And one byte at a time.
        std::vector<std::size_t> every;
        for (std::size_t at = 1; at < s.bytes.size(); ++at)
            every.push_back(at);
        bool clean = false;
        CHECK(receive(s, every, clean) == s.expected);
        CHECK(clean);
    }
}

TEST_CASE("grind: golden messages round-trip through MessageLog in memory and spilled", "[grind]")
{
    struct Entry {
        std::string bytes;
        DecodeContext ctx;
        std::string expected;
    };
    std::vector<Entry> catalog;
    for (const auto& m : load_all_golden())
        catalog.push_back({m.bytes, m.ctx, describe(decode(m.bytes, m.ctx))});
    std::size_t golden_count = catalog.size();
    // A message larger than MessageLog's 1 MiB read window, which a spilled cursor reads apart.
    {
        std::string content(1536 * 1024, '\0');
        for (std::size_t i = 0; i < content.size(); ++i)
            content[i] = static_cast<char>(i * 7 + i / 251);
        auto big = WireBuilder().u8('M').u8(0).u64(0x2000000).cstr("big").i32(static_cast<std::int32_t>(content.size()))
                       .raw(content).str();
        DecodeContext ctx;
        catalog.push_back({big, ctx, describe(decode(big, ctx))});
    }
    std::size_t big_index = catalog.size() - 1;

    struct Mode {
        const char* name;
        std::size_t memory_limit;
        std::size_t repeats; ///< passes over the golden messages; the big message sits in the middle
        bool spills;
    };
    const Mode modes[] = {
        {"in memory", std::size_t{256} << 20, 2, false},
        {"spilled from the first message", 0, 2, true},
        // ~4 MiB of golden messages: spills after 64 KiB, then messages straddle read windows.
        {"spilled past read windows", 64 * 1024, 1500, true},
    };
    auto dir = std::filesystem::temp_directory_path();
    for (const auto& mode : modes) {
        DYNAMIC_SECTION(mode.name)
        {
            queue::MessageLog log(dir, mode.memory_limit);
            std::vector<std::size_t> order;
            for (std::size_t rep = 0; rep < mode.repeats; ++rep) {
                if (rep == mode.repeats / 2)
                    order.push_back(big_index);
                for (std::size_t i = 0; i < golden_count; ++i)
                    order.push_back(i);
            }
            for (auto i : order)
                log.append(catalog[i].bytes);
            log.seal();
            CHECK(log.spilled() == mode.spills);
            CHECK(log.count() == order.size());

            auto cursor = log.cursor();
            std::string_view payload;
            std::size_t n = 0;
            std::size_t mismatches = 0;
            while (cursor.next(payload)) {
                REQUIRE(n < order.size());
                const auto& e = catalog[order[n]];
                // Bytes first (cheap, and names the failing message); then the decode itself.
                if (payload != e.bytes || describe(decode(payload, e.ctx)) != e.expected) {
                    if (++mismatches <= 5)
                        FAIL_CHECK("message " << n << " (catalog " << order[n] << ") differs after the round trip");
                }
                ++n;
            }
            CHECK(n == order.size());
            CHECK(mismatches == 0);
            CHECK(cursor.position() == log.position());
        }
    }
}
