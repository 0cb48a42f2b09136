// pgoutput logical replication messages (protocol versions 1-4): one struct per message, pure decoders.
//
// Design notes
// - Decoding never allocates for values: every std::string_view points into the caller's buffer,
//   which must outlive the decoded message.
// - Every read is bounds-checked; an unknown message type, tuple kind or flag, and any trailing
//   byte, is a ProtocolError. Nothing is guessed or defaulted.
// - The optional Xid prefix of Relation/Type/Insert/Update/Delete/Truncate/Message is present only
//   inside a Stream Start ... Stream Stop block; the caller says whether it is inside one.
// - Byte layouts: docs/protocol-notes.md section 3 and PostgreSQL's src/backend/replication/logical/proto.c.
#pragma once

#include "pgshift/common/clock.hpp"
#include "pgshift/common/lsn.hpp"

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

namespace pgshift::protocol {

/// Message type bytes, values equal to the wire byte.
enum class MsgType : char {
    begin = 'B',
    commit = 'C',
    origin = 'O',
    relation = 'R',
    type = 'Y',
    insert = 'I',
    update = 'U',
    del = 'D',
    truncate = 'T',
    message = 'M',
    stream_start = 'S',
    stream_stop = 'E',
    stream_commit = 'c',
    stream_abort = 'A',
    begin_prepare = 'b',
    prepare = 'P',
    stream_prepare = 'p',
    commit_prepared = 'K',
    rollback_prepared = 'r',
};

/// One column of a TupleData, kind equal to the wire byte.
enum class ColumnKind : char {
    null = 'n',
    unchanged_toast = 'u',
    text = 't',
    binary = 'b',
};

struct ColumnValue {
    ColumnKind kind = ColumnKind::null;
    std::string_view data; ///< the value bytes for text/binary, empty otherwise
};

struct TupleData {
    std::vector<ColumnValue> columns;
};

struct Begin {
    Lsn final_lsn; ///< LSN of the commit record (= Commit.commit_lsn)
    PgTimestamp commit_ts;
    Xid xid;
};

struct Commit {
    std::uint8_t flags = 0;
    Lsn commit_lsn;
    Lsn end_lsn; ///< end of the commit record: the position to confirm once applied
    PgTimestamp commit_ts;
};

struct Origin {
    Lsn origin_lsn;
    std::string_view name;
};

struct RelationColumn {
    std::uint8_t flags = 0; ///< 1 = part of the replica identity key
    std::string_view name;
    std::uint32_t type_oid = 0;
    std::int32_t type_modifier = -1;
    [[nodiscard]] bool is_key() const { return (flags & 1) != 0; }
};

enum class ReplicaIdentity : char {
    default_ = 'd',
    nothing = 'n',
    full = 'f',
    index = 'i',
};

struct Relation {
    std::optional<Xid> xid;
    RelId relid;
    std::string_view nspname; ///< "" means pg_catalog
    std::string_view relname;
    ReplicaIdentity replident = ReplicaIdentity::default_;
    std::vector<RelationColumn> columns;
};

struct Type {
    std::optional<Xid> xid;
    std::uint32_t type_oid = 0;
    std::string_view nspname;
    std::string_view typname;
};

struct Insert {
    std::optional<Xid> xid;
    RelId relid;
    TupleData new_tuple;
};

/// Which old tuple an Update or Delete carries.
enum class OldKind : char {
    none = 0,
    key = 'K', ///< replica identity key columns only (others are 'n')
    full = 'O', ///< whole old row (REPLICA IDENTITY FULL)
};

struct Update {
    std::optional<Xid> xid;
    RelId relid;
    OldKind old_kind = OldKind::none;
    TupleData old_tuple; ///< empty when old_kind == none
    TupleData new_tuple;
};

struct Delete {
    std::optional<Xid> xid;
    RelId relid;
    OldKind old_kind = OldKind::key; ///< key or full, never none
    TupleData old_tuple;
};

struct Truncate {
    static constexpr std::uint8_t k_cascade = 1;
    static constexpr std::uint8_t k_restart_identity = 2;
    std::optional<Xid> xid;
    std::uint8_t flags = 0;
    std::vector<RelId> relids;
};

struct LogicalMessage {
    std::optional<Xid> xid;
    std::uint8_t flags = 0; ///< 1 = transactional
    Lsn lsn;
    std::string_view prefix;
    std::string_view content;
    [[nodiscard]] bool transactional() const { return (flags & 1) != 0; }
};

struct StreamStart {
    Xid xid;
    std::uint8_t first_segment = 0;
};

struct StreamStop {};

struct StreamCommit {
    Xid xid;
    std::uint8_t flags = 0;
    Lsn commit_lsn;
    Lsn end_lsn;
    PgTimestamp commit_ts;
};

struct StreamAbort {
    Xid xid;
    Xid subxid; ///< == xid for a top-level abort
    std::optional<Lsn> abort_lsn; ///< protocol 4 with streaming = parallel only
    std::optional<PgTimestamp> abort_ts;
};

struct BeginPrepare {
    Lsn prepare_lsn;
    Lsn end_lsn;
    PgTimestamp prepare_ts;
    Xid xid;
    std::string_view gid;
};

/// Prepare ('P') and Stream Prepare ('p') share a layout.
struct Prepare {
    bool streamed = false;
    std::uint8_t flags = 0;
    Lsn prepare_lsn;
    Lsn end_lsn;
    PgTimestamp prepare_ts;
    Xid xid;
    std::string_view gid;
};

struct CommitPrepared {
    std::uint8_t flags = 0;
    Lsn commit_lsn;
    Lsn end_lsn;
    PgTimestamp commit_ts;
    Xid xid;
    std::string_view gid;
};

struct RollbackPrepared {
    std::uint8_t flags = 0;
    Lsn prepare_end_lsn;
    Lsn rollback_end_lsn;
    PgTimestamp prepare_ts;
    PgTimestamp rollback_ts;
    Xid xid;
    std::string_view gid;
};

using Message = std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage,
                             StreamStart, StreamStop, StreamCommit, StreamAbort, BeginPrepare, Prepare, CommitPrepared,
                             RollbackPrepared>;

/// What the decoder needs to know about the stream it is in.
struct DecodeContext {
    int proto_version = 1;        ///< negotiated proto_version (1-4)
    bool in_stream = false;       ///< between Stream Start and Stream Stop: Xid prefixes present
    bool parallel_stream = false; ///< streaming = parallel: Stream Abort carries abort_lsn/ts
};

/// Decodes one pgoutput message (the payload of one XLogData frame). Throws ProtocolError
/// naming the message type and offset on a truncated, malformed or over-long message.
[[nodiscard]] Message decode(std::string_view payload, const DecodeContext& ctx);

/// The type byte of a decoded message.
[[nodiscard]] MsgType type_of(const Message& m);

} // namespace pgshift::protocol
