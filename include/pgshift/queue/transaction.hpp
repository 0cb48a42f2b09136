// A decoded source transaction as it travels from the reader to the apply side.
#pragma once

#include "pgshift/common/clock.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pgshift::queue {

/// One pgoutput message inside a transaction (Relation, Type, Insert, Update, Delete, Truncate).
/// Owns its bytes; `msg` views into them. Moving a Change keeps the views valid because the
/// bytes live on the heap behind a unique_ptr.
class Change {
public:
    Change(std::string_view payload, const protocol::DecodeContext& ctx);
    Change(Change&&) noexcept = default;
    Change& operator=(Change&&) noexcept = default;

    [[nodiscard]] const protocol::Message& msg() const { return msg_; }
    [[nodiscard]] std::size_t size() const { return len_; }

private:
    std::unique_ptr<char[]> buf_;
    std::size_t len_ = 0;
    protocol::Message msg_;
};

struct Transaction {
    Xid xid;
    Lsn commit_lsn;   ///< start of the commit record (Begin.final_lsn)
    Lsn end_lsn;      ///< end of the commit record: what is confirmed once applied
    PgTimestamp commit_ts;
    std::string origin; ///< replication origin of the source transaction, "" when none
    std::vector<Change> changes;
    std::size_t bytes = 0; ///< accounted memory, for the queue bound
    std::chrono::steady_clock::time_point received_at;
};

} // namespace pgshift::queue
