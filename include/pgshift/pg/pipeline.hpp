// A libpq pipeline on one connection: statements go out without waiting, results come back in
// order, with a bound on what is in flight.
//
// Design notes
// - Transport only: no configuration, no logging, no policy. The first failure is remembered,
//   not thrown, so that the pipeline is always drained to its sync point before the caller
//   decides (roll back, retry, stop). Results that must have touched a row but did not are
//   reported the same way; what a missing row means is the caller's business.
// - An unbounded pipeline becomes quadratic on the server side: past `max_in_flight`
//   statements or 4 MiB of parameters, a flush request is sent and half of the results are read.
// - COPY cannot run in pipeline mode: copy_in() syncs, leaves it for the COPY and comes back.
// - Each Expect carries opaque tags (the caller's transaction and relation) so that a failure
//   can be described by the caller without building strings on the hot path.
#pragma once

#include "pgshift/pg/connection.hpp"

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshift::pg {

class Pipeline {
public:
    /// What a result read from the pipeline must be.
    struct Expect {
        const char* op = "";          ///< "INSERT", "BEGIN", ... (static strings)
        const void* txn = nullptr;    ///< caller's tag, e.g. the source transaction
        const void* rel = nullptr;    ///< caller's tag, e.g. the relation
        /// Rows the statement must affect; fewer is a missing row (0: not checked).
        std::uint32_t rows = 0;
    };
    struct Failure {
        Expect at;
        std::string message; ///< the server's or libpq's message, without trailing newline
        std::string sqlstate;
        bool retryable = false;
        std::optional<RuleViolation> violation; ///< for an integrity violation: the rule broken
    };

    explicit Pipeline(Connection& conn, std::size_t max_in_flight = 1000) : conn_(conn), max_in_flight_(max_in_flight)
    {
    }
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    void enter();
    /// Leaves pipeline mode (after sync()), e.g. to run a plain query inside the transaction.
    void leave();
    [[nodiscard]] bool active() const { return active_; }

    void send_query(const std::string& sql, const std::vector<const char*>& params, Expect e);
    void send_prepare(const std::string& name, const std::string& sql, int nparams, Expect e);
    /// `bytes`: the parameters' size, for the in-flight bound.
    void send_prepared(const std::string& name, const std::vector<const char*>& values, Expect e,
                       std::size_t bytes = 0);
    /// Runs `sql` (COPY ... FROM STDIN) with `data` after a sync point, outside pipeline mode,
    /// then enters it again. Skipped when a failure is recorded already; its own failure is
    /// recorded like any result's.
    void copy_in(const std::string& sql, std::string_view data, Expect e);
    /// Sends a sync point and reads every outstanding result up to it. Throws PgError only when
    /// the connection itself is out of step or gone.
    void sync();

    [[nodiscard]] const std::optional<Failure>& failure() const { return failure_; }
    /// Results that had to touch a row and touched none, in order.
    [[nodiscard]] const std::vector<Expect>& missing_rows() const { return missing_; }
    /// Forgets failures and missing rows (after a rollback, to reuse the pipeline).
    void reset()
    {
        failure_.reset();
        missing_.clear();
    }

private:
    void read_one();
    void after_send(Expect e, std::size_t bytes = 0);
    void record_failure(const Expect& e, pg_result* res);

    Connection& conn_;
    std::size_t max_in_flight_;
    std::deque<Expect> expects_;
    std::size_t bytes_in_flight_ = 0;
    bool active_ = false;
    std::optional<Failure> failure_;
    std::vector<Expect> missing_;
};

} // namespace pgshift::pg
