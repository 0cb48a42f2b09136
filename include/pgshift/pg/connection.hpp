// RAII wrappers around libpq: connections, results, quoting, SQLSTATE classification.
//
// A Connection has exactly one owner thread at a time. Errors from the server throw
// PgError (carrying the SQLSTATE); a lost connection throws PgError with broken() true.
#pragma once

#include "pgshift/common/errors.hpp"

#include <cstdint>
#include <memory>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pg_conn;
struct pg_result;
struct pg_cancel;

namespace pgshift::pg {

/// An error reported by libpq or the server. `sqlstate` is empty when libpq produced it locally.
class PgError : public Error {
public:
    PgError(const std::string& what, std::string sqlstate, bool broken,
            std::optional<RuleViolation> violation = std::nullopt)
        : Error(what), sqlstate_(std::move(sqlstate)), broken_(broken), violation_(std::move(violation)) {}
    [[nodiscard]] const std::string& sqlstate() const { return sqlstate_; }
    /// For an integrity violation: the rule the row broke.
    [[nodiscard]] const std::optional<RuleViolation>& violation() const { return violation_; }
    /// The connection is gone (socket closed, server terminated the backend, ...).
    [[nodiscard]] bool broken() const { return broken_; }
    /// Worth retrying on a new connection: connection loss, shutdown, serialization/deadlock,
    /// any error libpq produced itself (no SQLSTATE), ...
    [[nodiscard]] bool retryable() const;

private:
    std::string sqlstate_;
    bool broken_;
    std::optional<RuleViolation> violation_;
};

/// The rule an error result reports as broken (its SQLSTATE is an integrity violation), else none.
[[nodiscard]] std::optional<RuleViolation> violation_of(const pg_result* res);

/// True for an error result of severity FATAL or PANIC: the server ended the session.
[[nodiscard]] bool severity_ends_session(const pg_result* res);

/// Owns a PGresult.
class Result {
public:
    Result() = default;
    explicit Result(pg_result* r) : res_(r) {}
    Result(Result&&) noexcept = default;
    Result& operator=(Result&&) noexcept = default;

    [[nodiscard]] int rows() const;
    [[nodiscard]] int columns() const;
    [[nodiscard]] bool is_null(int row, int col) const;
    /// The text value; empty for NULL.
    [[nodiscard]] std::string_view get(int row, int col) const;
    [[nodiscard]] std::string str(int row, int col) const { return std::string(get(row, col)); }
    /// Rows affected by INSERT/UPDATE/DELETE (PQcmdTuples), 0 when not applicable.
    [[nodiscard]] std::uint64_t affected() const;
    [[nodiscard]] pg_result* raw() const { return res_.get(); }

private:
    struct Free {
        void operator()(pg_result* r) const;
    };
    std::unique_ptr<pg_result, Free> res_;
};

/// Asks the server to cancel the statement a connection is running now (PQcancel). Made by
/// Connection::canceller() on the connection's owner thread; cancel() may then be called from
/// any thread, also while the owner is blocked on that connection (that is its purpose). A
/// cancel that arrives when nothing runs is ignored by the server; one that arrives during the
/// next statement cancels that one, so callers only cancel when they are stopping anyway.
class Canceller {
public:
    Canceller(const Canceller&) = delete;
    Canceller& operator=(const Canceller&) = delete;
    ~Canceller();
    /// Sends the cancel request (a new short connection to the server, blocking up to its
    /// connect). Returns "" when it was sent, else libpq's reason. Safe from any thread.
    [[nodiscard]] std::string cancel() const;

private:
    friend class Connection;
    explicit Canceller(pg_cancel* c) : cancel_(c) {}
    pg_cancel* cancel_;
};

/// Owns a PGconn.
class Connection {
public:
    /// Connects (blocking). Throws PgError on failure; the message never contains the password.
    explicit Connection(const std::string& conninfo);
    Connection(Connection&&) noexcept = default;
    Connection& operator=(Connection&&) noexcept = default;
    ~Connection() = default;

    /// Runs SQL through the simple query protocol (several statements allowed). Throws PgError.
    Result exec(const std::string& sql);
    /// Runs one statement with text parameters ($1...). nullopt = NULL. Throws PgError.
    Result exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params);

    /// The same in two steps, for a caller that has other work meanwhile: send_params() sends
    /// the statement without waiting; result_ready() reads what the socket holds and tells
    /// whether the result is complete (never blocks); result() returns it, waiting if needed.
    /// Between send_params() and result(), nothing else may run on the connection. Throw PgError.
    void send_params(const std::string& sql, const std::vector<std::optional<std::string>>& params);
    [[nodiscard]] bool result_ready();
    Result result();

    /// Quotes an identifier ("my ""table""") / a literal ('it''s') for this connection's encoding.
    [[nodiscard]] std::string quote_ident(std::string_view ident) const;
    [[nodiscard]] std::string quote_literal(std::string_view lit) const;

    [[nodiscard]] int server_version() const;
    [[nodiscard]] int backend_pid() const;
    /// The network round trip to the server: the fastest of `samples` empty queries (the server
    /// answers one without parsing or planning anything). Throws PgError.
    [[nodiscard]] std::chrono::microseconds round_trip(int samples = 3);
    [[nodiscard]] bool is_ok() const;
    [[nodiscard]] pg_conn* raw() const { return conn_.get(); }
    /// A handle another thread can use to cancel this connection's running statement (see
    /// Canceller). Throws PgError when libpq cannot make one (connection not open).
    [[nodiscard]] std::unique_ptr<Canceller> canceller() const;

    /// Throws a PgError describing the connection's current error (what = context + libpq message).
    [[noreturn]] void fail(const std::string& context, pg_result* res = nullptr) const;

    /// Checks `res` succeeded (COMMAND_OK or TUPLES_OK), else throws with `context`.
    Result check(pg_result* res, const std::string& context) const;

private:
    struct Finish {
        void operator()(pg_conn* c) const;
    };
    std::unique_ptr<pg_conn, Finish> conn_;
};

/// Rolls back the transaction `conn` is in because an error ends it. Nothing is sent when the
/// connection is gone (the server rolled back already); a ROLLBACK that fails is ignored, so
/// that it cannot replace the error the caller is handling.
void rollback_after_error(Connection& conn) noexcept;

/// Runs `body()` in one transaction on `conn`: BEGIN, the body, COMMIT. When the body or the
/// COMMIT throws, the transaction is rolled back (rollback_after_error) and the exception goes
/// on unchanged. A failing BEGIN throws before the body runs.
template <typename F>
void in_transaction(Connection& conn, F&& body)
{
    conn.exec("BEGIN");
    try {
        std::forward<F>(body)();
        conn.exec("COMMIT");
    } catch (...) {
        rollback_after_error(conn);
        throw;
    }
}

/// Where server notices (NOTICE, WARNING, ...) and libpq's own warnings go: their severity and
/// primary message. libpq's default prints them raw to stderr, which breaks `log.format: json`;
/// the daemon routes them through its logger. Set once at startup, before connections open.
using NoticeSink = void (*)(std::string_view severity, std::string_view message);
void set_notice_sink(NoticeSink sink);

/// Quotes an identifier without a connection (always double quotes; UTF-8 safe).
[[nodiscard]] std::string quote_ident(std::string_view ident);
/// An identifier as PostgreSQL prints it: bare when it is lower case letters, digits and '_'
/// not starting with a digit, else quoted. XXX: a reserved word (e.g. user) stays bare.
[[nodiscard]] std::string readable_ident(std::string_view ident);
/// Quotes a literal without a connection, standard_conforming_strings on: 'it''s'.
[[nodiscard]] std::string quote_literal(std::string_view lit);

/// A text[] literal for a query parameter ($1::text[]): {"a","b ""c"""} with quotes and
/// backslashes escaped, so any identifier travels as one element.
[[nodiscard]] std::string text_array(const std::vector<std::string>& values);

/// The keywords a conninfo (key=value or URI form) sets, with their values, in libpq's keyword
/// order; keywords it leaves unset are absent (libpq's environment defaults are not applied).
/// Throws ConfigError("invalid conninfo: ...") when libpq cannot parse it.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> parse_conninfo(const std::string& conninfo);

/// Appends `key=value` pairs to a conninfo (key=value or URI form), overriding duplicates,
/// except `options`: the conninfo's own come first, the added ones after them.
[[nodiscard]] std::string conninfo_with(const std::string& conninfo,
                                        const std::vector<std::pair<std::string, std::string>>& extra);

/// `options` for the sessions whose work can outlast an application's timeouts: no statement,
/// lock or idle-in-transaction timeout from the role, the database or the conninfo. Applications
/// often have `ALTER DATABASE/ROLE ... SET statement_timeout` or `lock_timeout`, but a table's
/// copy, an index build, a verify or a large transaction's apply can take minutes, a cancelled
/// apply fails again at every retry (and a lock timeout, not retryable, would stop apply where
/// parallel workers wait on each other's rows), an apply worker's transaction idles at the commit
/// gate, and the walsender that exported the copy's snapshot idles in its transaction. The
/// replication connection, apply's sessions, the copy's, verify's and pg_dump add them;
/// short-lived connections for checks and control queries send no `options` at all, so that
/// `pgshift check` can still reach and name a PgBouncer in the way (it refuses the `options`
/// startup parameter). Stops and lock waits are pgshift's to handle (cancels on stop, the
/// fence's own `lock_timeout`).
inline constexpr const char* k_no_timeouts =
    "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0";

/// `options` for the sessions that write the replicated rows and pgshift's own records on the
/// target (apply's, the copy's, the table watch's): a database or role that defaults to
/// read-only transactions (`ALTER DATABASE ... SET default_transaction_read_only = on`, a
/// common runbook step to keep applications off a server that is not the primary, e.g. the old
/// primary after a cutover, which rollback's reverse stream writes to) does not stop pgshift,
/// as it would not stop a standby's replay.
inline constexpr const char* k_writable = "-c default_transaction_read_only=off";

/// `options` for the sessions that read or write replicated rows (apply's, the copy's, verify's,
/// the table watch's): row-level security that applies to pgshift's role (enabled on a table the
/// role does not own, or FORCEd, and no BYPASSRLS) must never filter rows silently: a copy
/// would miss rows, an UPDATE would match none, a verify would count fewer. With
/// `row_security=off` the server raises an error instead; `pgshift check` reports those tables
/// beforehand.
inline constexpr const char* k_all_rows = "-c row_security=off";

/// The timeouts k_no_timeouts cannot name, because an older server refuses an unknown setting at
/// connection time, set to 0 on the open session for its server's version: `idle_session_timeout`
/// (PostgreSQL 14+) would end an apply worker while the source is quiet, or the copy's target
/// session that waits through a long copy to build the indexes; `transaction_timeout` (17+)
/// would cancel a long transaction like `statement_timeout`. For the sessions that may sit idle:
/// those that get k_no_timeouts, and the daemon's monitor (not the replication connection:
/// streaming is not idle).
void no_version_timeouts(Connection& c);

} // namespace pgshift::pg
