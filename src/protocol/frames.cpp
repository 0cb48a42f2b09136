// CopyBoth frames of the streaming replication protocol: decoding 'w'/'k', encoding and decoding 'r'.
#include "pgshift/protocol/frames.hpp"

#include "pgshift/common/byte_reader.hpp"
#include "pgshift/common/errors.hpp"

#include <cstdio>

namespace pgshift::protocol {
namespace {

constexpr char k_xlog_data = 'w';
constexpr char k_keepalive = 'k';
constexpr char k_standby_status = 'r';
constexpr std::size_t k_standby_status_size = 1 + 4 * 8 + 1;

/// The walsender writes replyRequested as exactly 0 or 1; other values are not guessed at.
bool read_bool(ByteReader& r, const char* what)
{
    auto b = r.read_u8(what);
    if (b > 1)
        r.fail(what, "expected 0 or 1, got " + std::to_string(b));
    return b == 1;
}

} // namespace

ServerFrame decode_server_frame(std::string_view data)
{
    ByteReader r(data);
    auto type = r.read_u8("replication frame: type");
    if (type == k_xlog_data) {
        XLogData f;
        f.wal_start = Lsn(r.read_u64("XLogData: walStart"));
        f.wal_end = Lsn(r.read_u64("XLogData: walEnd"));
        f.send_time = PgTimestamp{r.read_i64("XLogData: sendTime")};
        // A logical walsender always puts exactly one pgoutput message here, never nothing.
        if (r.at_end())
            r.fail("XLogData: payload", "empty");
        f.payload = r.read_bytes(r.remaining(), "XLogData: payload");
        return f;
    }
    if (type == k_keepalive) {
        Keepalive f;
        f.wal_end = Lsn(r.read_u64("keepalive: walEnd"));
        f.send_time = PgTimestamp{r.read_i64("keepalive: sendTime")};
        f.reply_requested = read_bool(r, "keepalive: replyRequested");
        r.expect_end("keepalive: end of frame");
        return f;
    }
    r.fail("replication frame", "unknown type " + describe_byte(type));
}

std::string encode_standby_status(const StandbyStatus& s)
{
    std::string out;
    out.reserve(k_standby_status_size);
    out.push_back(k_standby_status);
    put_be(out, s.write.value(), 8);
    put_be(out, s.flush.value(), 8);
    put_be(out, s.apply.value(), 8);
    put_be(out, static_cast<std::uint64_t>(s.client_time.micros), 8);
    out.push_back(s.reply_requested ? 1 : 0);
    return out;
}

StandbyStatus decode_standby_status(std::string_view data)
{
    ByteReader r(data);
    auto type = r.read_u8("standby status: type");
    if (type != k_standby_status)
        r.fail("standby status", "unexpected type " + describe_byte(type));
    StandbyStatus s;
    s.write = Lsn(r.read_u64("standby status: write"));
    s.flush = Lsn(r.read_u64("standby status: flush"));
    s.apply = Lsn(r.read_u64("standby status: apply"));
    s.client_time = PgTimestamp{r.read_i64("standby status: clientTime")};
    s.reply_requested = read_bool(r, "standby status: replyRequested");
    r.expect_end("standby status: end of frame");
    return s;
}

} // namespace pgshift::protocol
