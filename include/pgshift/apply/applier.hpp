// The apply side: one target connection replaying source transactions in commit order, exactly once.
//
// Design notes
// - Owned by the apply thread. Exactly-once rests on three things (ARCHITECTURE rules 1-4):
//   the connection has its own replication origin; every transaction calls
//   pg_replication_origin_xact_setup(end_lsn, commit_ts) and forces an xid, so the origin's
//   progress commits atomically with the data; after a restart we resume from the origin's
//   flushed progress and skip any transaction whose commit_lsn is below it.
// - Each transaction is sent as one libpq pipeline (BEGIN, xid, statements, xact_setup) with a
//   bound on statements in flight; COMMIT is sent only once every result was checked (a missing
//   row must not be committed). On any error the transaction is rolled back, never half-applied.
// - Consecutive transactions already queued are grouped into one target transaction (up to 256
//   or 8 MiB), which records the last one's end_lsn: fewer commits, and the target still only
//   shows states the source had at some commit. A failure rolls back the whole group.
// - Messages are read from the transaction's MessageLog (memory or spill file) one at a time and
//   decoded on the fly, so applying a transaction of any size takes bounded memory. A relation
//   is resolved against the target catalog when a change first uses it (settling the pipeline
//   for that lookup, inside the open transaction), not when its Relation message arrives: the
//   source also describes partitions whose changes it publishes under their root.
// - Stale backends of a crashed daemon still hold the origin: they are terminated by
//   application_name, and waited for, before the origin session is set up. Only then is the
//   origin's progress read, so an in-flight COMMIT of the dead process is accounted for.
#pragma once

#include "pgshift/apply/statements.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/queue/txn_queue.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgshift::apply {

class Pipeline; // one transaction group's libpq pipeline (applier.cpp)

class Applier {
public:
    Applier(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats,
            int worker = 0);

    /// Connects and ends stale sessions of our origin (no other side effect).
    /// Returns the origin's durable progress (zero when nothing was ever applied).
    Lsn connect();
    /// server_version_num of the target (after connect()).
    [[nodiscard]] int server_version() const { return conn_ ? conn_->server_version() : 0; }
    /// Creates the origin when it does not exist yet (after every check passed).
    void ensure_origin();
    /// Initialises the origin's progress (first start only, before begin_session).
    void advance_origin(Lsn lsn);
    /// Binds the origin to this session; transactions with commit_lsn < `resume` are skipped.
    void begin_session(Lsn resume);
    /// Applies queued transactions until `stop` is set; then records the final durable position.
    /// While `paused` is set nothing is applied (the reader keeps reading up to the queue bound).
    void run(const std::atomic<bool>& stop, const std::atomic<bool>& paused);

private:
    void apply(const std::vector<std::unique_ptr<queue::Transaction>>& group);
    /// Replays a group of consecutive source transactions as one target transaction; returns
    /// whether one was committed (false when every one was skipped or had no row changes;
    /// Relation messages take effect either way).
    bool execute(const std::vector<std::unique_ptr<queue::Transaction>>& group);

    struct ChangeCounts {
        std::uint64_t inserts = 0, updates = 0, deletes = 0, truncates = 0;
    };
    /// Sends one source transaction's changes into the group's pipeline (BEGIN on the first).
    void execute_one(Pipeline& pl, const queue::Transaction& txn, bool& began, ChangeCounts& counts);
    /// Sends one row change or TRUNCATE.
    void send_change(Pipeline& pl, const queue::Transaction& txn, const protocol::Message& msg, bool& began,
                     ChangeCounts& counts);
    std::shared_ptr<RelationMapping> resolve(const protocol::Relation& rel);
    void refresh_durable();
    /// The target mapping of a relation, resolved on first use (settling `pl` for the lookup).
    [[nodiscard]] std::shared_ptr<RelationMapping> mapping_for(RelId relid, const queue::Transaction& txn,
                                                               Pipeline& pl);

    const config::Config& cfg_;
    queue::TxnQueue& queue_;
    queue::Progress& progress_;
    queue::Stats& stats_;
    std::string origin_;
    std::unique_ptr<pg::Connection> conn_;
    Lsn resume_;

    /// The latest Relation message of each relid (raw, with how to decode it) and its mapping.
    struct KnownRelation {
        std::string payload;
        protocol::DecodeContext decode;
        std::shared_ptr<RelationMapping> mapping; ///< null until a change uses the relation
    };
    std::unordered_map<RelId, KnownRelation> relations_;
    std::unordered_map<std::string, std::string> prepared_; ///< statement key -> prepared name
    std::uint64_t generation_ = 0;
    std::uint64_t statement_counter_ = 0;
    std::chrono::steady_clock::time_point last_durable_check_;
    std::string scratch_; ///< parameter values of the statement being sent, NUL-separated
    std::vector<std::size_t> offsets_;  ///< per parameter: offset in scratch_, SIZE_MAX for NULL
    std::vector<const char*> values_;   ///< per parameter: pointer into scratch_ or nullptr
    const std::atomic<bool>* stop_ = nullptr; ///< run()'s stop flag, checked inside long transactions
    /// Thrown out of execute() when a stop request rolled the transaction back.
    struct Interrupted {};
};

} // namespace pgshift::apply
