// CopyBoth frame tests: hand-built 'w' and 'k' frames from the walsender, 'r' encoding and round trips.
#include "golden.hpp"

#include "pgshift/common/errors.hpp"
#include "pgshift/protocol/frames.hpp"

#include "error_matcher.hpp"

#include <catch2/catch.hpp>

using namespace pgshift;
using namespace pgshift::protocol;
using pgshift::protocol::test::unhex;
using pgshift::protocol::test::WireBuilder;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

constexpr std::uint64_t k_wal = 0x16B374D848;
constexpr std::int64_t k_send_time = 848607607122665; // 2026-11-21, µs since 2000-01-01

std::string xlog_frame(std::uint64_t start, std::uint64_t end, std::int64_t time, std::string_view payload)
{
    return WireBuilder().u8('w').u64(start).u64(end).i64(time).raw(payload).str();
}

std::string keepalive_frame(std::uint64_t end, std::int64_t time, std::uint8_t reply)
{
    return WireBuilder().u8('k').u64(end).i64(time).u8(reply).str();
}

} // namespace

TEST_CASE("XLogData: header fields, and the payload is a view into the frame", "[frames]")
{
    // A Begin from the golden capture (xid 744), as the walsender would frame it (walStart == walEnd).
    std::string payload = unhex("42000000000156cd18000303cddaf088ee000002e8");
    std::string frame = xlog_frame(k_wal, k_wal, k_send_time, payload);
    REQUIRE(frame.size() == 25 + payload.size());

    auto f = decode_server_frame(frame);
    REQUIRE(std::holds_alternative<XLogData>(f));
    const auto& x = std::get<XLogData>(f);
    CHECK(x.wal_start == Lsn(k_wal));
    CHECK(x.wal_end == Lsn(k_wal));
    CHECK(x.wal_start.str() == "16/B374D848");
    CHECK(x.send_time == PgTimestamp{k_send_time});
    CHECK(x.payload == payload);
    CHECK(x.payload.data() == frame.data() + 25);

    auto b = std::get<Begin>(decode(x.payload, DecodeContext{}));
    CHECK(b.xid == Xid{744});
}

TEST_CASE("XLogData wraps every golden message unchanged", "[frames]")
{
    for (const auto& m : test::load_all_golden()) {
        INFO(m.file << ":" << m.line);
        // Relation/Type frames carry 0/0 positions on a real server; the header is opaque here.
        std::string frame = xlog_frame(0, 0, k_send_time, m.bytes);
        auto x = std::get<XLogData>(decode_server_frame(frame));
        CHECK(x.payload == m.bytes);
        CHECK_NOTHROW(decode(x.payload, m.ctx));
    }
}

TEST_CASE("XLogData: a truncated header or an empty payload is a ProtocolError", "[frames]")
{
    std::string frame = xlog_frame(k_wal, k_wal, k_send_time, "E");
    for (std::size_t len = 0; len < frame.size(); ++len) {
        INFO("length " << len);
        std::string prefix = frame.substr(0, len);
        CHECK_THROWS_AS(decode_server_frame(prefix), ProtocolError);
    }
    CHECK_PROTOCOL_ERROR(decode_server_frame(frame.substr(0, 25)),
                         StartsWith("XLogData: payload: empty at offset 25 of 25"));
    CHECK_PROTOCOL_ERROR(decode_server_frame(frame.substr(0, 9)),
                         StartsWith("XLogData: walEnd: truncated"));
}

TEST_CASE("keepalive: fields and replyRequested", "[frames]")
{
    auto k0 = std::get<Keepalive>(decode_server_frame(keepalive_frame(k_wal, k_send_time, 0)));
    CHECK(k0.wal_end == Lsn(k_wal));
    CHECK(k0.send_time == PgTimestamp{k_send_time});
    CHECK(!k0.reply_requested);

    auto k1 = std::get<Keepalive>(decode_server_frame(keepalive_frame(k_wal, k_send_time, 1)));
    CHECK(k1.reply_requested);

    // Exact bytes as the walsender sends them (WalSndKeepalive).
    auto lit = unhex("6b00000016b374d848000303cddaf9eae901");
    auto k2 = std::get<Keepalive>(decode_server_frame(lit));
    CHECK(k2.wal_end.str() == "16/B374D848");
    CHECK(k2.send_time == PgTimestamp{k_send_time});
    CHECK(k2.reply_requested);
}

TEST_CASE("keepalive: truncation, trailing bytes and unknown replyRequested are ProtocolErrors", "[frames]")
{
    std::string frame = keepalive_frame(k_wal, k_send_time, 1);
    REQUIRE(frame.size() == 18);
    for (std::size_t len = 0; len < frame.size(); ++len) {
        INFO("length " << len);
        std::string prefix = frame.substr(0, len);
        CHECK_THROWS_AS(decode_server_frame(prefix), ProtocolError);
    }
    CHECK_PROTOCOL_ERROR(decode_server_frame(frame + '\0'), Contains("1 trailing bytes"));
    CHECK_PROTOCOL_ERROR(decode_server_frame(keepalive_frame(k_wal, k_send_time, 2)),
                         StartsWith("keepalive: replyRequested: expected 0 or 1, got 2"));
}

TEST_CASE("unknown server frame types are ProtocolErrors", "[frames]")
{
    CHECK_THROWS_WITH(decode_server_frame("x"), "replication frame: unknown type 'x' (0x78) at offset 1 of 1");
    // 'r' goes client -> server only.
    StandbyStatus s;
    CHECK_PROTOCOL_ERROR(decode_server_frame(encode_standby_status(s)), Contains("unknown type 'r'"));
    CHECK_THROWS_AS(decode_server_frame(""), ProtocolError);
}

TEST_CASE("standby status: exact encoding", "[frames]")
{
    StandbyStatus s;
    s.write = Lsn(0x0000001600000010);
    s.flush = Lsn(0x0000001500000020);
    s.apply = Lsn(0x0000001400000030);
    s.client_time = PgTimestamp{k_send_time};
    s.reply_requested = true;
    CHECK(encode_standby_status(s) ==
          unhex("72" "0000001600000010" "0000001500000020" "0000001400000030" "000303cddaf9eae9" "01"));

    s.reply_requested = false;
    s.client_time = PgTimestamp{-1}; // before 2000: two's complement on the wire
    auto bytes = encode_standby_status(s);
    REQUIRE(bytes.size() == 34);
    CHECK(bytes.substr(25, 8) == unhex("ffffffffffffffff"));
    CHECK(bytes.back() == '\0');
}

TEST_CASE("standby status: round trip", "[frames]")
{
    for (bool reply : {false, true}) {
        StandbyStatus s;
        s.write = Lsn(0xFFFFFFFFFFFFFFFF);
        s.flush = Lsn(k_wal);
        s.apply = Lsn(0);
        s.client_time = PgTimestamp{reply ? k_send_time : -k_send_time};
        s.reply_requested = reply;
        auto d = decode_standby_status(encode_standby_status(s));
        CHECK(d.write == s.write);
        CHECK(d.flush == s.flush);
        CHECK(d.apply == s.apply);
        CHECK(d.client_time == s.client_time);
        CHECK(d.reply_requested == s.reply_requested);
    }
}

TEST_CASE("standby status: malformed input is a ProtocolError", "[frames]")
{
    StandbyStatus s;
    s.flush = Lsn(k_wal);
    auto bytes = encode_standby_status(s);
    for (std::size_t len = 0; len < bytes.size(); ++len) {
        INFO("length " << len);
        std::string prefix = bytes.substr(0, len);
        CHECK_THROWS_AS(decode_standby_status(prefix), ProtocolError);
    }
    CHECK_PROTOCOL_ERROR(decode_standby_status(bytes + 'x'), Contains("1 trailing bytes"));
    auto bad = bytes;
    bad[0] = 'k';
    CHECK_PROTOCOL_ERROR(decode_standby_status(bad), StartsWith("standby status: unexpected type 'k'"));
    bad = bytes;
    bad.back() = 5;
    CHECK_PROTOCOL_ERROR(decode_standby_status(bad), Contains("expected 0 or 1, got 5"));
}
