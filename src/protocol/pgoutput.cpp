// Decoders for pgoutput logical replication messages, one function per message type.
//
// Design notes
// - Readers mirror PostgreSQL's logicalrep_read_* (proto.c) field for field, and are stricter
//   where proto.c trusts its peer: every flag byte whose bits are not defined is rejected,
//   every count and length is checked for sign, and the whole payload must be consumed.
// - Field readers name only the field ("relid", "column kind"); decode() prefixes the message
//   name ("pgoutput Update: ") when a ProtocolError leaves it, so the happy path builds no
//   strings and every error still names the message type, the field and the offset.
// - Counts read from the wire are checked against the bytes left before reserving, so a
//   corrupt count fails as a truncation instead of asking for gigabytes.
#include "pgshift/protocol/pgoutput.hpp"

#include "pgshift/common/byte_reader.hpp"
#include "pgshift/common/errors.hpp"

#include <cstdio>
#include <string>
#include <type_traits>

namespace pgshift::protocol {
namespace {

// Protocol version that introduced a message type (logicalproto.h LOGICALREP_PROTO_*_VERSION_NUM).
constexpr int k_proto_stream = 2;
constexpr int k_proto_two_phase = 3;
constexpr int k_proto_parallel_stream = 4;

// Defined flag bits (proto.c); anything else means a newer peer or corruption.
constexpr std::uint8_t k_column_flags_mask = 1;   // LOGICALREP_IS_REPLICA_IDENTITY
constexpr std::uint8_t k_message_flags_mask = 1;  // MESSAGE_TRANSACTIONAL
constexpr std::uint8_t k_truncate_flags_mask = Truncate::k_cascade | Truncate::k_restart_identity;

// Smallest wire size of one element, used to bound a count by the bytes left.
constexpr std::size_t k_min_tuple_column_size = 1;    // kind byte ('n'/'u')
constexpr std::size_t k_min_relation_column_size = 10; // flags, "" name, type OID, typmod
constexpr std::size_t k_relid_size = 4;

const char* message_name(std::uint8_t type)
{
    switch (static_cast<MsgType>(type)) {
    case MsgType::begin: return "Begin";
    case MsgType::commit: return "Commit";
    case MsgType::origin: return "Origin";
    case MsgType::relation: return "Relation";
    case MsgType::type: return "Type";
    case MsgType::insert: return "Insert";
    case MsgType::update: return "Update";
    case MsgType::del: return "Delete";
    case MsgType::truncate: return "Truncate";
    case MsgType::message: return "Message";
    case MsgType::stream_start: return "Stream Start";
    case MsgType::stream_stop: return "Stream Stop";
    case MsgType::stream_commit: return "Stream Commit";
    case MsgType::stream_abort: return "Stream Abort";
    case MsgType::begin_prepare: return "Begin Prepare";
    case MsgType::prepare: return "Prepare";
    case MsgType::stream_prepare: return "Stream Prepare";
    case MsgType::commit_prepared: return "Commit Prepared";
    case MsgType::rollback_prepared: return "Rollback Prepared";
    }
    return nullptr;
}

/// The protocol version a message type first appeared in.
int min_proto_version(MsgType t)
{
    switch (t) {
    case MsgType::stream_start:
    case MsgType::stream_stop:
    case MsgType::stream_commit:
    case MsgType::stream_abort:
        return k_proto_stream;
    case MsgType::begin_prepare:
    case MsgType::prepare:
    case MsgType::stream_prepare:
    case MsgType::commit_prepared:
    case MsgType::rollback_prepared:
        return k_proto_two_phase;
    default:
        return 1;
    }
}

Lsn read_lsn(ByteReader& r, const char* what) { return Lsn(r.read_u64(what)); }
PgTimestamp read_ts(ByteReader& r, const char* what) { return PgTimestamp{r.read_i64(what)}; }
Xid read_xid(ByteReader& r, const char* what) { return Xid{r.read_u32(what)}; }

/// The Xid prefix pgoutput writes only while streaming. Inside a stream it is the xid of the
/// (sub)transaction that made the change, not necessarily the Stream Start xid.
std::optional<Xid> read_stream_xid(ByteReader& r, const DecodeContext& ctx)
{
    if (!ctx.in_stream)
        return std::nullopt;
    return read_xid(r, "xid");
}

/// A flags byte of which only `mask` bits are defined.
std::uint8_t read_flags(ByteReader& r, const char* what, std::uint8_t mask)
{
    auto flags = r.read_u8(what);
    if ((flags & ~mask) != 0)
        r.fail(what, "unknown flags " + describe_byte(flags));
    return flags;
}

/// A count or length that PostgreSQL writes as a signed integer and that must not be negative.
template <typename Int>
std::size_t checked_count(ByteReader& r, Int v, const char* what)
{
    if (v < 0)
        r.fail(what, "negative (" + std::to_string(v) + ")");
    return static_cast<std::size_t>(v);
}

/// Fails as a truncation when `count` elements of at least `min_size` bytes cannot fit.
void check_fits(ByteReader& r, std::size_t count, std::size_t min_size, const char* what)
{
    if (count > r.remaining() / min_size)
        r.fail(what, "truncated (" + std::to_string(count) + " entries cannot fit in " +
                         std::to_string(r.remaining()) + " bytes)");
}

void read_tuple(ByteReader& r, TupleData& out)
{
    auto ncols = checked_count(r, r.read_i16("tuple column count"), "tuple column count");
    check_fits(r, ncols, k_min_tuple_column_size, "tuple columns");
    out.columns.reserve(ncols);
    for (std::size_t i = 0; i < ncols; ++i) {
        auto kind = r.read_u8("tuple column kind");
        switch (static_cast<ColumnKind>(kind)) {
        case ColumnKind::null:
        case ColumnKind::unchanged_toast:
            out.columns.push_back(ColumnValue{static_cast<ColumnKind>(kind), {}});
            break;
        case ColumnKind::text:
        case ColumnKind::binary: {
            auto len = checked_count(r, r.read_i32("tuple column length"), "tuple column length");
            out.columns.push_back(ColumnValue{static_cast<ColumnKind>(kind), r.read_bytes(len, "tuple column value")});
            break;
        }
        default:
            r.fail("tuple column kind", "unknown kind " + describe_byte(kind) + " for column " + std::to_string(i));
        }
    }
}

Begin read_begin(ByteReader& r)
{
    Begin m;
    m.final_lsn = read_lsn(r, "final_lsn");
    // As logicalrep_read_begin: a zero final_lsn would defeat the Begin/Commit LSN check.
    if (m.final_lsn.is_zero())
        r.fail("final_lsn", "not set");
    m.commit_ts = read_ts(r, "commit_ts");
    m.xid = read_xid(r, "xid");
    return m;
}

Commit read_commit(ByteReader& r)
{
    Commit m;
    m.flags = read_flags(r, "flags", 0);
    m.commit_lsn = read_lsn(r, "commit_lsn");
    m.end_lsn = read_lsn(r, "end_lsn");
    m.commit_ts = read_ts(r, "commit_ts");
    return m;
}

Origin read_origin(ByteReader& r)
{
    Origin m;
    m.origin_lsn = read_lsn(r, "origin_lsn");
    m.name = r.read_cstring("origin name");
    return m;
}

ReplicaIdentity read_replident(ByteReader& r)
{
    auto c = r.read_u8("replica identity");
    switch (static_cast<ReplicaIdentity>(c)) {
    case ReplicaIdentity::default_:
    case ReplicaIdentity::nothing:
    case ReplicaIdentity::full:
    case ReplicaIdentity::index:
        return static_cast<ReplicaIdentity>(c);
    }
    r.fail("replica identity", "unknown value " + describe_byte(c));
}

Relation read_relation(ByteReader& r, const DecodeContext& ctx)
{
    Relation m;
    m.xid = read_stream_xid(r, ctx);
    m.relid = RelId{r.read_u32("relid")};
    m.nspname = r.read_cstring("namespace");
    m.relname = r.read_cstring("relation name");
    m.replident = read_replident(r);
    auto ncols = checked_count(r, r.read_i16("column count"), "column count");
    check_fits(r, ncols, k_min_relation_column_size, "columns");
    m.columns.reserve(ncols);
    for (std::size_t i = 0; i < ncols; ++i) {
        RelationColumn c;
        c.flags = read_flags(r, "column flags", k_column_flags_mask);
        c.name = r.read_cstring("column name");
        c.type_oid = r.read_u32("column type OID");
        c.type_modifier = r.read_i32("column type modifier");
        m.columns.push_back(c);
    }
    return m;
}

Type read_type(ByteReader& r, const DecodeContext& ctx)
{
    Type m;
    m.xid = read_stream_xid(r, ctx);
    m.type_oid = r.read_u32("type OID");
    m.nspname = r.read_cstring("namespace");
    m.typname = r.read_cstring("type name");
    return m;
}

/// Reads the 'N' marker that must precede a new tuple.
void expect_new_marker(ByteReader& r, std::uint8_t marker)
{
    if (marker != 'N')
        r.fail("tuple marker", "expected 'N', got " + describe_byte(marker));
}

Insert read_insert(ByteReader& r, const DecodeContext& ctx)
{
    Insert m;
    m.xid = read_stream_xid(r, ctx);
    m.relid = RelId{r.read_u32("relid")};
    expect_new_marker(r, r.read_u8("tuple marker"));
    read_tuple(r, m.new_tuple);
    return m;
}

Update read_update(ByteReader& r, const DecodeContext& ctx)
{
    Update m;
    m.xid = read_stream_xid(r, ctx);
    m.relid = RelId{r.read_u32("relid")};
    auto marker = r.read_u8("tuple marker");
    if (marker == static_cast<std::uint8_t>(OldKind::key) || marker == static_cast<std::uint8_t>(OldKind::full)) {
        m.old_kind = static_cast<OldKind>(marker);
        read_tuple(r, m.old_tuple);
        marker = r.read_u8("tuple marker");
    } else if (marker != 'N') {
        r.fail("tuple marker", "expected 'K', 'O' or 'N', got " + describe_byte(marker));
    }
    expect_new_marker(r, marker);
    read_tuple(r, m.new_tuple);
    return m;
}

Delete read_delete(ByteReader& r, const DecodeContext& ctx)
{
    Delete m;
    m.xid = read_stream_xid(r, ctx);
    m.relid = RelId{r.read_u32("relid")};
    auto marker = r.read_u8("tuple marker");
    if (marker != static_cast<std::uint8_t>(OldKind::key) && marker != static_cast<std::uint8_t>(OldKind::full))
        r.fail("tuple marker", "expected 'K' or 'O', got " + describe_byte(marker));
    m.old_kind = static_cast<OldKind>(marker);
    read_tuple(r, m.old_tuple);
    return m;
}

Truncate read_truncate(ByteReader& r, const DecodeContext& ctx)
{
    Truncate m;
    m.xid = read_stream_xid(r, ctx);
    auto nrels = checked_count(r, r.read_i32("relation count"), "relation count");
    m.flags = read_flags(r, "flags", k_truncate_flags_mask);
    check_fits(r, nrels, k_relid_size, "relids");
    m.relids.reserve(nrels);
    for (std::size_t i = 0; i < nrels; ++i)
        m.relids.push_back(RelId{r.read_u32("relid")});
    return m;
}

LogicalMessage read_message(ByteReader& r, const DecodeContext& ctx)
{
    LogicalMessage m;
    m.xid = read_stream_xid(r, ctx);
    m.flags = read_flags(r, "flags", k_message_flags_mask);
    m.lsn = read_lsn(r, "lsn");
    m.prefix = r.read_cstring("prefix");
    auto len = checked_count(r, r.read_i32("content length"), "content length");
    m.content = r.read_bytes(len, "content");
    return m;
}

StreamStart read_stream_start(ByteReader& r)
{
    StreamStart m;
    m.xid = read_xid(r, "xid");
    m.first_segment = r.read_u8("first_segment");
    // pgoutput writes a bool; anything else is not a Stream Start we understand.
    if (m.first_segment > 1)
        r.fail("first_segment", "unknown value " + describe_byte(m.first_segment));
    return m;
}

StreamCommit read_stream_commit(ByteReader& r)
{
    StreamCommit m;
    m.xid = read_xid(r, "xid");
    m.flags = read_flags(r, "flags", 0);
    m.commit_lsn = read_lsn(r, "commit_lsn");
    m.end_lsn = read_lsn(r, "end_lsn");
    m.commit_ts = read_ts(r, "commit_ts");
    return m;
}

StreamAbort read_stream_abort(ByteReader& r, const DecodeContext& ctx)
{
    StreamAbort m;
    m.xid = read_xid(r, "xid");
    m.subxid = read_xid(r, "subxid");
    // Only parallel apply needs the abort position, so only then does pgoutput send it.
    if (ctx.proto_version >= k_proto_parallel_stream && ctx.parallel_stream) {
        m.abort_lsn = read_lsn(r, "abort_lsn");
        m.abort_ts = read_ts(r, "abort_ts");
    }
    return m;
}

BeginPrepare read_begin_prepare(ByteReader& r)
{
    BeginPrepare m;
    m.prepare_lsn = read_lsn(r, "prepare_lsn");
    m.end_lsn = read_lsn(r, "end_lsn");
    m.prepare_ts = read_ts(r, "prepare_ts");
    m.xid = read_xid(r, "xid");
    m.gid = r.read_cstring("gid");
    return m;
}

Prepare read_prepare(ByteReader& r, bool streamed)
{
    Prepare m;
    m.streamed = streamed;
    m.flags = read_flags(r, "flags", 0);
    m.prepare_lsn = read_lsn(r, "prepare_lsn");
    m.end_lsn = read_lsn(r, "end_lsn");
    m.prepare_ts = read_ts(r, "prepare_ts");
    m.xid = read_xid(r, "xid");
    m.gid = r.read_cstring("gid");
    return m;
}

CommitPrepared read_commit_prepared(ByteReader& r)
{
    CommitPrepared m;
    m.flags = read_flags(r, "flags", 0);
    m.commit_lsn = read_lsn(r, "commit_lsn");
    m.end_lsn = read_lsn(r, "end_lsn");
    m.commit_ts = read_ts(r, "commit_ts");
    m.xid = read_xid(r, "xid");
    m.gid = r.read_cstring("gid");
    return m;
}

RollbackPrepared read_rollback_prepared(ByteReader& r)
{
    RollbackPrepared m;
    m.flags = read_flags(r, "flags", 0);
    m.prepare_end_lsn = read_lsn(r, "prepare_end_lsn");
    m.rollback_end_lsn = read_lsn(r, "rollback_end_lsn");
    m.prepare_ts = read_ts(r, "prepare_ts");
    m.rollback_ts = read_ts(r, "rollback_ts");
    m.xid = read_xid(r, "xid");
    m.gid = r.read_cstring("gid");
    return m;
}

Message read_body(ByteReader& r, MsgType type, const DecodeContext& ctx)
{
    switch (type) {
    case MsgType::begin: return read_begin(r);
    case MsgType::commit: return read_commit(r);
    case MsgType::origin: return read_origin(r);
    case MsgType::relation: return read_relation(r, ctx);
    case MsgType::type: return read_type(r, ctx);
    case MsgType::insert: return read_insert(r, ctx);
    case MsgType::update: return read_update(r, ctx);
    case MsgType::del: return read_delete(r, ctx);
    case MsgType::truncate: return read_truncate(r, ctx);
    case MsgType::message: return read_message(r, ctx);
    case MsgType::stream_start: return read_stream_start(r);
    case MsgType::stream_stop: return StreamStop{};
    case MsgType::stream_commit: return read_stream_commit(r);
    case MsgType::stream_abort: return read_stream_abort(r, ctx);
    case MsgType::begin_prepare: return read_begin_prepare(r);
    case MsgType::prepare: return read_prepare(r, false);
    case MsgType::stream_prepare: return read_prepare(r, true);
    case MsgType::commit_prepared: return read_commit_prepared(r);
    case MsgType::rollback_prepared: return read_rollback_prepared(r);
    }
    // decode() only passes types message_name() knows.
    throw InternalError("pgoutput: read_body called with an unknown type");
}

} // namespace

Message decode(std::string_view payload, const DecodeContext& ctx)
{
    ByteReader r(payload);
    auto type_byte = r.read_u8("pgoutput: message type");
    const char* name = message_name(type_byte);
    if (name == nullptr)
        r.fail("pgoutput", "unknown message type " + describe_byte(type_byte));
    auto type = static_cast<MsgType>(type_byte);
    try {
        if (ctx.proto_version < min_proto_version(type))
            r.fail("message type", "not defined in protocol version " + std::to_string(ctx.proto_version));
        Message m = read_body(r, type, ctx);
        r.expect_end("end of message");
        return m;
    } catch (const ProtocolError& e) {
        // Adds the message name once, here, so field readers stay allocation-free.
        throw ProtocolError(std::string("pgoutput ") + name + ": " + e.what());
    }
}

MsgType type_of(const Message& m)
{
    return std::visit(
        [](const auto& v) -> MsgType {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, Begin>) return MsgType::begin;
            else if constexpr (std::is_same_v<T, Commit>) return MsgType::commit;
            else if constexpr (std::is_same_v<T, Origin>) return MsgType::origin;
            else if constexpr (std::is_same_v<T, Relation>) return MsgType::relation;
            else if constexpr (std::is_same_v<T, Type>) return MsgType::type;
            else if constexpr (std::is_same_v<T, Insert>) return MsgType::insert;
            else if constexpr (std::is_same_v<T, Update>) return MsgType::update;
            else if constexpr (std::is_same_v<T, Delete>) return MsgType::del;
            else if constexpr (std::is_same_v<T, Truncate>) return MsgType::truncate;
            else if constexpr (std::is_same_v<T, LogicalMessage>) return MsgType::message;
            else if constexpr (std::is_same_v<T, StreamStart>) return MsgType::stream_start;
            else if constexpr (std::is_same_v<T, StreamStop>) return MsgType::stream_stop;
            else if constexpr (std::is_same_v<T, StreamCommit>) return MsgType::stream_commit;
            else if constexpr (std::is_same_v<T, StreamAbort>) return MsgType::stream_abort;
            else if constexpr (std::is_same_v<T, BeginPrepare>) return MsgType::begin_prepare;
            else if constexpr (std::is_same_v<T, Prepare>) return v.streamed ? MsgType::stream_prepare : MsgType::prepare;
            else if constexpr (std::is_same_v<T, CommitPrepared>) return MsgType::commit_prepared;
            else if constexpr (std::is_same_v<T, RollbackPrepared>) return MsgType::rollback_prepared;
            else static_assert(sizeof(T) == 0, "type_of: message type without a wire byte");
        },
        m);
}

} // namespace pgshift::protocol
