// CopyBoth frames of the streaming replication protocol: XLogData 'w', keepalive 'k', standby status 'r'.
#pragma once

#include "pgshift/common/clock.hpp"
#include "pgshift/common/lsn.hpp"

#include <string>
#include <string_view>
#include <variant>

namespace pgshift::protocol {

/// 'w': one pgoutput message; `payload` points into the caller's buffer.
struct XLogData {
    Lsn wal_start;
    Lsn wal_end;
    PgTimestamp send_time;
    std::string_view payload;
};

/// 'k': server keepalive.
struct Keepalive {
    Lsn wal_end;
    PgTimestamp send_time;
    bool reply_requested = false;
};

using ServerFrame = std::variant<XLogData, Keepalive>;

/// Decodes one CopyData payload received from the server. Throws ProtocolError on anything else.
[[nodiscard]] ServerFrame decode_server_frame(std::string_view data);

/// 'r': standby status update. Only `flush` advances a logical slot.
struct StandbyStatus {
    Lsn write;
    Lsn flush;
    Lsn apply;
    PgTimestamp client_time;
    bool reply_requested = false;
};

[[nodiscard]] std::string encode_standby_status(const StandbyStatus& s);

/// Decodes a standby status update (used by tests and tools, the pair of encode_standby_status).
[[nodiscard]] StandbyStatus decode_standby_status(std::string_view data);

} // namespace pgshift::protocol
