// The reader: publication and slot setup, the START_REPLICATION loop, transaction assembly, feedback.
//
// Design notes
// - Owned by the reader thread; it owns the replication connection and nothing else touches it.
// - It never blocks on apply: when the queue is full it stops reading from the socket but keeps
//   sending standby status updates, so the source's wal_sender_timeout is never hit.
// - The flush position it reports comes from Progress::confirmable_flush() (rule 3) and never
//   moves backwards.
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/replication.hpp"
#include "pgshift/protocol/pgoutput.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::reader {

/// What the source knows about our slot.
struct SlotInfo {
    bool exists = false;
    Lsn confirmed_flush;
    Lsn restart_lsn;
    std::string wal_status; ///< reserved | extended | unreserved | lost
    bool active = false;
};

/// Picks the pgoutput protocol version for a server version (server_version_num).
[[nodiscard]] int proto_version_for(int server_version_num);

/// Prepares the source: checks wal_level, creates or updates the publication for the selected
/// tables (through an ordinary connection). Returns the selected tables as "schema.table".
std::vector<std::string> prepare_publication(const config::Config& cfg);

/// Reads the slot's state through an ordinary connection.
[[nodiscard]] SlotInfo read_slot(const config::Config& cfg);

class Reader {
public:
    Reader(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats);

    /// Connects the replication connection and runs IDENTIFY_SYSTEM.
    void connect();
    /// server_version_num of the source (after connect()).
    [[nodiscard]] int server_version() const { return server_version_; }
    /// Creates the slot; returns its consistent point.
    Lsn create_slot();
    /// START_REPLICATION at `start` and stream until `stop` is set. Throws SourceError on trouble.
    void stream(Lsn start, const std::atomic<bool>& stop);

private:
    void handle_xlogdata(std::string_view payload);
    void push_pending(const std::atomic<bool>& stop);
    void maybe_send_status(bool force, bool reply_requested = false);

    const config::Config& cfg_;
    queue::TxnQueue& queue_;
    queue::Progress& progress_;
    queue::Stats& stats_;
    std::unique_ptr<pg::ReplicationConnection> conn_;
    int server_version_ = 0;
    protocol::DecodeContext decode_ctx_;

    std::unique_ptr<queue::Transaction> current_; ///< being received
    std::unique_ptr<queue::Transaction> pending_; ///< complete, waiting for queue space
    Lsn last_flush_sent_;
    std::chrono::steady_clock::time_point last_status_;
};

} // namespace pgshift::reader
