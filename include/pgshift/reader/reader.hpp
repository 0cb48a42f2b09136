// The reader: publication and slot setup, the START_REPLICATION loop, transaction assembly, feedback.
//
// Design notes
// - Owned by the reader thread; it owns the replication connection and nothing else touches it.
// - It never blocks on apply: when the queue is full it stops reading from the socket but keeps
//   sending standby status updates, so the source's wal_sender_timeout is never hit.
// - The flush position it reports comes from Progress::confirmable_flush() (rule 3) and never
//   moves backwards.
// - Per-table synchronisation positions (initial copy resumed after a crash): a table copied
//   under a later snapshot than the slot's consistent point must not receive the changes its
//   copy already holds. skip_changes_below() gives each such table its snapshot's LSN; row
//   changes (and a TRUNCATE's relations) of that table in a transaction whose commit LSN is
//   below it are dropped here, as built-in replication's table synchronisation does. Such a
//   session asks the source not to stream in-progress transactions (their commit LSN is only
//   known at the end), so every change is judged knowing it; large ones still spill.
// - Memory is bounded whatever the transaction size (rule 10): a transaction's messages go to a
//   MessageLog that spills to a file past a quarter of apply.max_queue_bytes; large
//   transactions are streamed by the source before commit, spooled per xid, cut back on a
//   subtransaction's Stream Abort, dropped on a top-level one, queued on Stream Commit.
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/pg/replication.hpp"
#include "pgshift/protocol/pgoutput.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"

#include <atomic>
#include <filesystem>
#include <map>
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

/// Reads the slot's state through an ordinary connection.
[[nodiscard]] SlotInfo read_slot(pg::Connection& source, const std::string& slot_name);

class Reader {
public:
    Reader(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats);

    /// Connects the replication connection and runs IDENTIFY_SYSTEM.
    void connect();
    /// server_version_num of the source (after connect()).
    [[nodiscard]] int server_version() const { return server_version_; }
    /// Creates the slot; returns its consistent point.
    Lsn create_slot();
    /// Creates the slot with an exported snapshot (the initial copy's, rule 11). The snapshot
    /// lives until the next command on this connection: call stream() only once every copy
    /// session imported it.
    pg::CreatedSlot create_slot_with_snapshot();
    /// Before stream(): changes to table "schema.table" in transactions that commit below its LSN
    /// are dropped (see the design notes). Empty map: nothing is dropped.
    void skip_changes_below(std::map<std::string, Lsn> tables) { skip_below_ = std::move(tables); }
    /// START_REPLICATION at `start` and stream until `stop` is set. Throws SourceError on trouble.
    void stream(Lsn start, const std::atomic<bool>& stop);

private:
    /// A transaction being streamed before commit (protocol 2+).
    struct Stream {
        std::unique_ptr<queue::Transaction> txn;
        std::vector<std::pair<std::uint32_t, std::uint64_t>> subxacts; ///< (subxid, first position)
    };
    static constexpr std::size_t k_stream_memory_limit = 1 << 20;
    static constexpr std::size_t k_spilled_charge = 1 << 20;

    [[nodiscard]] std::unique_ptr<queue::Transaction> new_transaction(std::size_t memory_limit) const;
    void complete(std::unique_ptr<queue::Transaction> txn);
    void abort_subtransaction(Stream& st, std::uint32_t subxid);
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

    std::filesystem::path spill_dir_;
    std::size_t txn_memory_limit_; ///< a transaction larger than this spills to a file
    std::unique_ptr<queue::Transaction> current_; ///< being received
    std::map<std::uint32_t, Stream> streams_;     ///< streamed transactions by top-level xid
    std::optional<std::uint32_t> stream_xid_;     ///< inside Stream Start ... Stream Stop
    std::unique_ptr<queue::Transaction> pending_; ///< complete, waiting for queue space
    Lsn last_flush_sent_;
    Lsn last_write_sent_; ///< the write position of the last status update
    std::chrono::steady_clock::time_point last_status_;

    /// Whether a non-streamed row change must be dropped (skip_changes_below); may rewrite a
    /// TRUNCATE's payload into `rewritten` (then non-empty) without the dropped relations.
    [[nodiscard]] bool drop_change(const protocol::Message& msg, std::string& rewritten) const;
    std::map<std::string, Lsn> skip_below_;           ///< table -> sync LSN (reader thread after stream())
    std::map<std::uint32_t, Lsn> skip_relids_;        ///< relid -> sync LSN, from Relation messages
    std::uint64_t dropped_changes_ = 0;
    /// Whether `msg` is a row change of a transaction pgshift itself wrote (loop prevention).
    [[nodiscard]] bool own_origin_change(const queue::Transaction& txn, const protocol::Message& msg);
    std::uint64_t own_origin_skipped_ = 0; ///< row changes pgshift wrote itself, dropped (rule 12)
};

} // namespace pgshift::reader
