// Statement writer: turns row operations into as few target statements as is safe, through a
// worker's pipeline.
//
// Design notes
// - Runs: consecutive operations of one table that one statement can carry together become a
//   multi-row statement: inserts always (a multi-row INSERT inserts its rows in order; long
//   runs go as COPY), updates and deletes only when the compactor marked them distinct (one row
//   each, located by the replica identity key, updates of one SET shape). Everything else,
//   including every table with a trigger that fires during apply, goes one statement per row.
// - Multi-row statements are prepared per (relation generation, shape, rows) with rows from a
//   few fixed sizes (64, 16, 4), so a handful of statements serve every run; parameters stay
//   under PostgreSQL's limit. A run is bounded (1,024 operations or 1 MiB) before it is sent.
// - Missing rows: an UPDATE or DELETE of n rows that affected fewer is reported by the pipeline
//   as a missing row; the worker decides what it means. Guarded (set_guard()), the statement
//   fails on the server instead, so that nothing of the transaction can commit.
// - Owned by one worker (one connection); not thread-safe.
#pragma once

#include "pgshift/apply/compaction.hpp"
#include "pgshift/apply/relations.hpp"
#include "pgshift/pg/pipeline.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgshift::apply {

class Writer {
public:
    /// Queues one operation (its `table` is a RelationInfo); sends the pending run first when
    /// this one cannot join it.
    void add(pg::Pipeline& pl, RowOp op);
    /// Sends the pending run.
    void flush(pg::Pipeline& pl);
    /// Forgets prepared statements (after a failed PREPARE, or on a new connection).
    void forget_prepared() { prepared_.clear(); }

    /// Guarded statements: an UPDATE or DELETE that finds fewer rows than it must fails on the
    /// server (statements.hpp guarded()) instead of being reported as a missing row, so that a
    /// COMMIT may follow in the same round trip. Off by default.
    void set_guard(bool on) { guard_ = on; }

    /// Statements sent (a COPY counts as one) and rows they carried, since construction.
    [[nodiscard]] std::uint64_t statements() const { return statements_; }
    [[nodiscard]] std::uint64_t rows() const { return rows_; }

    /// Inserts runs of at least this many rows go as COPY on a nearby target.
    static constexpr std::size_t k_copy_min_rows = 48;
    /// What COPY saves the target per row against a prepared multi-row INSERT, as an estimate.
    static constexpr std::chrono::nanoseconds k_copy_saving_per_row{2000};
    /// Tells the writer the round trip to its target (Connection::round_trip). A COPY leaves the
    /// pipeline (the statements before it are synced, the COPY starts, then ends): about two
    /// round trips more than a multi-row INSERT sent in the pipeline. It is worth them when the
    /// run has at least rtt * 2 / k_copy_saving_per_row rows (and k_copy_min_rows): 48 rows
    /// over loopback, 5,000 through a 5 ms round trip to another data centre.
    void set_round_trip(std::chrono::microseconds rtt);
    [[nodiscard]] std::size_t copy_min_rows() const { return copy_min_rows_; }

private:
    [[nodiscard]] bool joins_run(const RowOp& op, const RelationInfo& rel) const;
    void send_run(pg::Pipeline& pl);
    void send_single(pg::Pipeline& pl, const RowOp& op, const RelationInfo& rel);
    void send_rows(pg::Pipeline& pl, std::size_t first, std::size_t count, const RelationInfo& rel);
    void send_copy(pg::Pipeline& pl, const RelationInfo& rel);
    struct Prepared {
        Statement statement;
        std::string name;
        bool guarded = false; ///< fails on a missing row (statements.hpp guarded())
    };
    /// The prepared statement of shape key_ (guarded when set_guard() is on and the statement
    /// must affect rows), built by `build` and prepared on first use.
    template <typename Build>
    const Prepared& prepared(pg::Pipeline& pl, const RowOp& tag, const RelationInfo& rel, std::uint32_t must_affect,
                             Build&& build);
    /// Sends `p` with the parameters of `ops`.
    void send(pg::Pipeline& pl, const Prepared& p, const RowOp* ops, std::size_t count, const char* op,
              const RelationInfo& rel, std::uint32_t must_affect);

    std::vector<RowOp> run_;
    std::size_t run_bytes_ = 0;
    std::string run_shape_; ///< updates: the SET shape of the run

    /// Shape key (kind, relation generation, old kind, sent/unchanged/NULL masks, rows) ->
    /// statement; built without SQL text, so a cache hit costs no string building.
    std::unordered_map<std::string, Prepared> prepared_;
    std::string key_;
    std::uint64_t statement_counter_ = 0;
    std::string scratch_;              ///< parameter values of the statement being sent
    std::vector<std::size_t> offsets_; ///< per parameter: offset in scratch_, SIZE_MAX for NULL
    std::vector<const char*> values_;
    std::vector<protocol::TupleData> views_;
    std::uint64_t statements_ = 0, rows_ = 0;
    std::size_t copy_min_rows_ = k_copy_min_rows;
    bool guard_ = false;
};

} // namespace pgshift::apply
