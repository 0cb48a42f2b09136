// The initial copy: initial_copy.workers sessions copy every selected table from source to
// target under the one snapshot the slot exported, tables split into page ranges.
//
// Design notes
// - Consistency (ARCHITECTURE rule 11): each session opens a REPEATABLE READ transaction on
//   the source and imports the slot's exported snapshot (SET TRANSACTION SNAPSHOT) before its
//   first COPY, and copies every unit it takes within that one transaction. Every session
//   therefore sees exactly the transactions that committed before the slot's consistent
//   point; streaming from that point carries every later one. The caller keeps the exporting
//   (walsender) connection idle until imported() is true.
// - Units: a relation holding rows (an ordinary table, or each leaf partition of a
//   partitioned one, copied into the target's root, which routes the rows) is one unit, or
//   when it is large, several ranges of heap pages: `WHERE ctid >= '(a,0)' AND ctid <
//   '(b,0)'`, a TID range scan (PostgreSQL 14+). Every row version visible to the snapshot
//   lives in exactly one page, so the ranges partition the rows; the last range is open-ended,
//   so pages added after planning are covered too. Units are taken largest table first, so
//   one big table keeps every session busy and small tables fill the gaps at the end.
// - Each unit is one target transaction (session_replication_role = replica: no user
//   triggers, no foreign-key checks, as apply; synchronous_commit off: copy_state's `done`
//   commit flushes them all). A failed unit fails the copy; the next session resumes it
//   (copy_state.hpp: finished tables are kept, the others copied again under a new snapshot).
// - Threads: start() runs one thread per session; the caller's thread polls imported(),
//   finished() and the progress, and calls stop()/join(). Sessions check the stop flag every
//   k_tick_bytes, and stop() also cancels their running statements, so a stop ends a COPY
//   promptly even when it waits for a lock or a slow server.
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/copy/table_copy.hpp"
#include "pgshift/pg/connection.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pgshift::copy {

/// One selected table's progress. Counters are written by the copy sessions, read by status.
struct TableProgress {
    std::string display;        ///< schema.table
    std::string sql;            ///< "schema"."table" (the target relation)
    std::uint64_t pages = 0;    ///< heap pages at planning (all leaves)
    std::atomic<std::uint64_t> rows{0}, bytes{0};
    std::atomic<std::uint64_t> pages_done{0}; ///< pages of the units committed
    std::atomic<int> units_total{0}, units_started{0}, units_done{0};

    /// pending | copying | done
    [[nodiscard]] const char* state() const;
};

/// The whole copy's progress: fixed table list, shared by the sessions and the daemon's status.
struct CopyProgress {
    std::vector<std::unique_ptr<TableProgress>> tables; ///< largest first; fixed once planned
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::atomic<int> sessions{0};          ///< sessions started
    std::atomic<int> sessions_imported{0}; ///< sessions that imported the snapshot
    std::atomic<bool> planned{false};      ///< `tables` is complete (read it only after this)
    std::atomic<std::uint64_t> rows{0}, bytes{0};
    std::atomic<std::int64_t> elapsed_ms{-1}; ///< set once the copy ended: rates stop moving

    struct Totals {
        std::uint64_t tables = 0, done = 0, copying = 0;
        std::uint64_t pages = 0, pages_done = 0;
        std::uint64_t rows = 0, bytes = 0;
        double seconds = 0;
    };
    [[nodiscard]] Totals totals() const;
};

/// Whether large tables are split into page ranges (initial_copy.split_tables), given the number
/// of sessions and both servers' versions (server_version_num).
[[nodiscard]] bool should_split(config::SplitTables mode, std::uint64_t sessions, int source_version,
                                int target_version);

/// One range of heap pages [first, end); end == 0 means "to the end of the relation".
struct PageRange {
    std::uint64_t first = 0, end = 0;
    bool operator==(const PageRange&) const = default;
};

/// Splits a relation of `pages` pages (its size when planned) into ranges of `range_pages`: one
/// open-ended range when it is smaller than 1.5 ranges, else ranges of `range_pages` with the
/// last one open-ended and between 0.5 and 1.5 ranges long (so pages added later are covered).
/// Pure; every page belongs to exactly one range.
[[nodiscard]] std::vector<PageRange> split_pages(std::uint64_t pages, std::uint64_t range_pages);

/// A relation whose rows a unit reads, and the table they go to.
struct CopyTable {
    std::string display; ///< schema.table of the selected table
    std::string sql;     ///< "schema"."table"
};

class SnapshotCopy {
public:
    /// `on_copied` is called from the sessions with rows and bytes as they are copied (for the
    /// daemon's counters); it must be thread-safe.
    SnapshotCopy(const config::Config& cfg, std::vector<CopyTable> tables, std::string snapshot,
                 std::shared_ptr<CopyProgress> progress, CopyTick on_copied);
    ~SnapshotCopy();
    SnapshotCopy(const SnapshotCopy&) = delete;
    SnapshotCopy& operator=(const SnapshotCopy&) = delete;

    /// Plans the units (on a plain source connection) and starts the sessions. Throws
    /// SourceError when planning fails.
    void start();
    /// Every session imported the snapshot: the exporting connection may move on.
    [[nodiscard]] bool imported() const;
    /// Every session has ended (all units copied, or an error, or stop()).
    [[nodiscard]] bool finished() const { return running_.load() == 0 && started_; }
    /// Whether a session failed (finished() may still be false).
    [[nodiscard]] bool failed() const { return failed_.load(); }
    /// Asks the sessions to stop: at their next tick, and by cancelling their running
    /// statements (a COPY waiting for a lock or a slow server never ticks).
    void stop();
    /// Joins the sessions; rethrows the first session error (a stop is not an error).
    void join();
    /// Tables whose every unit committed, and not yet reported by take_finished_tables().
    [[nodiscard]] std::vector<const TableProgress*> take_finished_tables();

private:
    struct Unit {
        TableProgress* table;
        std::string relation; ///< "schema"."rel" the rows are read from (the table or a leaf partition)
        bool partition = false; ///< `relation` is a leaf partition of the table
        std::uint64_t first_page = 0, end_page = 0; ///< [first, end); end 0 = to the end
        bool whole = true;    ///< no ctid condition
        std::uint64_t pages = 0;
        bool freeze = false; ///< TRUNCATE ONLY the table, then COPY ... FREEZE (CopyFormat::can_freeze)
    };
    void plan();
    void session_main(int k);
    [[nodiscard]] Unit* next_unit();

    const config::Config& cfg_;
    std::vector<CopyTable> tables_;
    std::string snapshot_;
    std::shared_ptr<CopyProgress> progress_;
    CopyTick on_copied_;
    std::vector<CopyFormat> formats_; ///< how each table travels, by index in progress_->tables
    std::vector<Unit> units_;
    std::atomic<std::size_t> next_{0};
    std::atomic<bool> stop_{false}, failed_{false};
    std::atomic<bool> cancelled_{false}; ///< stop() ran: statements were cancelled
    std::atomic<int> running_{0};
    bool started_ = false;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::exception_ptr error_;          // guarded by mutex_
    std::vector<bool> reported_;        // guarded by mutex_; per table, by take_finished_tables
    /// Cancel handles of every session's open connections (PGcancel*), for stop().
    std::vector<void*> cancels_;        // guarded by mutex_
    void register_cancel(pg::Connection& conn);
};

} // namespace pgshift::copy
