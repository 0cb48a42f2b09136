// A source transaction as it travels from the reader to the apply side.
#pragma once

#include "pgshift/common/clock.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/protocol/pgoutput.hpp"
#include "pgshift/queue/message_log.hpp"

#include <chrono>
#include <cstddef>
#include <string>

namespace pgshift::queue {

struct Transaction {
    explicit Transaction(MessageLog log) : messages(std::move(log)) {}

    Xid xid;
    Lsn commit_lsn;   ///< start of the commit record (Begin.final_lsn)
    Lsn end_lsn;      ///< end of the commit record: what is confirmed once applied
    PgTimestamp commit_ts;
    std::string origin; ///< replication origin of the source transaction, "" when none
    /// Relation, Type, Insert, Update, Delete, Truncate messages in stream order, validated by
    /// the reader; decoded again by apply with `decode` (in_stream for streamed transactions).
    MessageLog messages;
    protocol::DecodeContext decode;
    std::size_t bytes = 0; ///< accounted memory, for the queue bound
    std::chrono::steady_clock::time_point received_at;
};

} // namespace pgshift::queue
