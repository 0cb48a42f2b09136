// libpq RAII wrappers, quoting and SQLSTATE classification.
#include "pgshift/pg/connection.hpp"

#include "pgshift/common/address.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pgshift::pg {

bool PgError::retryable() const
{
    // No SQLSTATE: libpq produced the error itself (connection lost, a result missing from the
    // stream, ...). Nothing says a new session would fail the same way, and a new session is
    // always safe (exactly-once does not depend on the old one), so retry with backoff rather
    // than stop for an operator.
    if (broken_ || sqlstate_.empty())
        return true;
    // Class 08 connection exception, 57P01-57P03 admin/crash shutdown, cannot connect now,
    // 40001 serialization failure, 40P01 deadlock, 53xxx insufficient resources.
    if (sqlstate_.rfind("08", 0) == 0 || sqlstate_.rfind("53", 0) == 0)
        return true;
    return sqlstate_ == "57P01" || sqlstate_ == "57P02" || sqlstate_ == "57P03" || sqlstate_ == "40001" ||
           sqlstate_ == "40P01" || sqlstate_ == "55006";
}

void Result::Free::operator()(pg_result* r) const { PQclear(r); }

int Result::rows() const { return res_ ? PQntuples(res_.get()) : 0; }
int Result::columns() const { return res_ ? PQnfields(res_.get()) : 0; }
bool Result::is_null(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }

std::string_view Result::get(int row, int col) const
{
    if (PQgetisnull(res_.get(), row, col))
        return {};
    return {PQgetvalue(res_.get(), row, col), static_cast<std::size_t>(PQgetlength(res_.get(), row, col))};
}

std::uint64_t Result::affected() const
{
    const char* n = res_ ? PQcmdTuples(res_.get()) : "";
    return *n ? std::strtoull(n, nullptr, 10) : 0;
}

void Connection::Finish::operator()(pg_conn* c) const { PQfinish(c); }

Canceller::~Canceller() { PQfreeCancel(cancel_); }

std::string Canceller::cancel() const
{
    // PQcancel is documented as safe to call from another thread (even a signal handler) with
    // a PGcancel object: it uses only the object and its own socket.
    char err[256] = {};
    if (PQcancel(cancel_, err, sizeof err))
        return "";
    return err[0] ? err : "PQcancel failed";
}

std::unique_ptr<Canceller> Connection::canceller() const
{
    pg_cancel* c = conn_ ? PQgetCancel(conn_.get()) : nullptr;
    if (!c)
        throw PgError("could not make a cancel handle: the connection is not open", "", true);
    return std::unique_ptr<Canceller>(new Canceller(c));
}

namespace {

/// Timeouts every pgshift connection needs unless the operator chose otherwise: a connection
/// attempt to an unreachable host gives up (instead of blocking a thread for minutes), and a
/// server that vanished without closing the socket is noticed by TCP keepalives within about a
/// minute (otherwise a blocked read can wait for hours).
std::string with_network_defaults(const std::string& conninfo)
{
    static const std::pair<const char*, const char*> k_defaults[] = {
        {"connect_timeout", "10"}, {"keepalives", "1"}, {"keepalives_idle", "30"},
        {"keepalives_interval", "10"}, {"keepalives_count", "3"}};
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
    if (!opts) {
        if (err)
            PQfreemem(err);
        return conninfo; // PQconnectdb reports the problem
    }
    std::vector<std::pair<std::string, std::string>> missing;
    for (const auto& [key, value] : k_defaults) {
        bool set = false;
        for (PQconninfoOption* o = opts; o->keyword; ++o)
            set = set || (std::strcmp(o->keyword, key) == 0 && o->val && *o->val);
        if (!set)
            missing.emplace_back(key, value);
    }
    PQconninfoFree(opts);
    return missing.empty() ? conninfo : conninfo_with(conninfo, missing);
}

std::atomic<NoticeSink> g_notice_sink{nullptr};

/// libpq's notice receiver: every notice a connection gets, also during a server shutdown.
void receive_notice(void*, const PGresult* res)
{
    const char* sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    std::string_view severity = sev ? sev : "NOTICE";
    std::string_view message = primary ? primary : PQresultErrorMessage(res);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
        message.remove_suffix(1);
    if (auto sink = g_notice_sink.load())
        sink(severity, message);
    else
        std::fprintf(stderr, "%.*s:  %.*s\n", static_cast<int>(severity.size()), severity.data(),
                     static_cast<int>(message.size()), message.data());
}

} // namespace

void set_notice_sink(NoticeSink sink) { g_notice_sink.store(sink); }

bool severity_ends_session(const pg_result* res)
{
    if (!res)
        return false;
    const char* sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev && (std::strcmp(sev, "FATAL") == 0 || std::strcmp(sev, "PANIC") == 0);
}

Connection::Connection(const std::string& conninfo) : conn_(PQconnectdb(with_network_defaults(conninfo).c_str()))
{
    if (!conn_)
        throw PgError("could not allocate a libpq connection", "", true);
    if (PQstatus(conn_.get()) != CONNECTION_OK) {
        // libpq's message names host/port/user but never the password.
        std::string msg = PQerrorMessage(conn_.get());
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
            msg.pop_back();
        throw PgError("could not connect: " + msg, "", true);
    }
    PQsetNoticeReceiver(conn_.get(), receive_notice, nullptr);
}

std::optional<RuleViolation> violation_of(const pg_result* res)
{
    if (!res)
        return std::nullopt;
    auto field = [res](int code) {
        const char* v = PQresultErrorField(res, code);
        return std::string(v ? v : "");
    };
    RuleViolation v{field(PG_DIAG_SQLSTATE), field(PG_DIAG_SCHEMA_NAME), field(PG_DIAG_TABLE_NAME),
                    field(PG_DIAG_CONSTRAINT_NAME), field(PG_DIAG_COLUMN_NAME)};
    // An enum value the target's type lacks (enum_in's error names no table).
    if (v.sqlstate == "22P02" && field(PG_DIAG_MESSAGE_PRIMARY).rfind("invalid input value for enum ", 0) == 0)
        return v;
    static const char* const k_rules[] = {"23502", "23503", "23505", "23514", "23P01"};
    if (std::find(std::begin(k_rules), std::end(k_rules), v.sqlstate) == std::end(k_rules) || v.table.empty())
        return std::nullopt;
    return v;
}

bool Connection::is_ok() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
int Connection::server_version() const { return PQserverVersion(conn_.get()); }
int Connection::backend_pid() const { return PQbackendPID(conn_.get()); }

void Connection::fail(const std::string& context, pg_result* res) const
{
    std::string sqlstate;
    std::string msg;
    if (res) {
        if (const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE))
            sqlstate = s;
        msg = PQresultErrorMessage(res);
    }
    if (msg.empty())
        msg = PQerrorMessage(conn_.get());
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
        msg.pop_back();
    // A FATAL (or PANIC) error ends the session, even when libpq has not yet seen the socket
    // close: e.g. 57P01 during a fast shutdown, read from a pipeline before the EOF.
    bool broken = PQstatus(conn_.get()) != CONNECTION_OK || severity_ends_session(res);
    auto violation = violation_of(res);
    if (res)
        PQclear(res);
    throw PgError(context + ": " + msg, sqlstate, broken, std::move(violation));
}

Result Connection::check(pg_result* res, const std::string& context) const
{
    if (!res)
        fail(context);
    auto st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail(context, res);
    return Result(res);
}

Result Connection::exec(const std::string& sql)
{
    return check(PQexec(conn_.get(), sql.c_str()), "query failed");
}

std::chrono::microseconds Connection::round_trip(int samples)
{
    auto best = std::chrono::microseconds::max();
    for (int i = 0; i < samples; ++i) {
        auto started = std::chrono::steady_clock::now();
        PGresult* res = PQexec(conn_.get(), "");
        const bool answered = PQresultStatus(res) == PGRES_EMPTY_QUERY;
        PQclear(res);
        if (!answered)
            fail("measuring the round trip to the server");
        best = std::min(best, std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                                     started));
    }
    return best;
}

namespace {

std::vector<const char*> param_values(const std::vector<std::optional<std::string>>& params)
{
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params)
        values.push_back(p ? p->c_str() : nullptr);
    return values;
}

} // namespace

Result Connection::exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params)
{
    auto values = param_values(params);
    return check(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                              nullptr, nullptr, 0),
                 "query failed");
}

void Connection::send_params(const std::string& sql, const std::vector<std::optional<std::string>>& params)
{
    auto values = param_values(params);
    if (!PQsendQueryParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                           nullptr, nullptr, 0))
        fail("could not send query");
}

bool Connection::result_ready()
{
    if (!PQconsumeInput(conn_.get()))
        fail("could not read a query result");
    return PQisBusy(conn_.get()) == 0;
}

Result Connection::result()
{
    PGresult* res = PQgetResult(conn_.get());
    // A statement's results end with a NULL one: the connection is then free again.
    if (res)
        while (PGresult* extra = PQgetResult(conn_.get()))
            PQclear(extra);
    return check(res, "query failed");
}

std::string Connection::quote_ident(std::string_view ident) const { return pg::quote_ident(ident); }
std::string Connection::quote_literal(std::string_view lit) const { return pg::quote_literal(lit); }

void rollback_after_error(Connection& conn) noexcept
{
    try {
        if (conn.is_ok())
            conn.exec("ROLLBACK");
    } catch (...) {
        // The error being handled says more than this one; the caller rethrows that.
    }
}

std::string quote_ident(std::string_view ident)
{
    std::string out;
    out.reserve(ident.size() + 2);
    out.push_back('"');
    for (char c : ident) {
        if (c == '"')
            out.push_back('"');
        out.push_back(c);
    }
    out.push_back('"');
    return out;
}

std::string readable_ident(std::string_view ident)
{
    bool plain = !ident.empty() && !(ident[0] >= '0' && ident[0] <= '9');
    for (char c : ident)
        plain = plain && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
    return plain ? std::string(ident) : quote_ident(ident);
}

std::string quote_literal(std::string_view lit)
{
    // E'' form when a backslash is present, so the result is right whatever
    // standard_conforming_strings says.
    bool has_backslash = lit.find('\\') != std::string_view::npos;
    std::string out;
    out.reserve(lit.size() + 3);
    if (has_backslash)
        out.push_back('E');
    out.push_back('\'');
    for (char c : lit) {
        if (c == '\'' || (c == '\\' && has_backslash))
            out.push_back(c);
        out.push_back(c);
    }
    out.push_back('\'');
    return out;
}

std::string text_array(const std::vector<std::string>& values)
{
    std::string out = "{";
    for (const auto& v : values) {
        if (out.size() > 1)
            out.push_back(',');
        out.push_back('"');
        for (char c : v) {
            if (c == '"' || c == '\\')
                out.push_back('\\');
            out.push_back(c);
        }
        out.push_back('"');
    }
    return out + "}";
}

std::vector<std::pair<std::string, std::string>> parse_conninfo(const std::string& conninfo)
{
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
    if (!opts) {
        std::string msg = err ? err : "invalid conninfo";
        if (err)
            PQfreemem(err);
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
            msg.pop_back();
        throw ConfigError("invalid conninfo: " + msg);
    }
    std::vector<std::pair<std::string, std::string>> out;
    for (PQconninfoOption* o = opts; o->keyword; ++o)
        if (o->val)
            out.emplace_back(o->keyword, o->val);
    PQconninfoFree(opts);
    return out;
}

void no_version_timeouts(Connection& c)
{
    std::string sql;
    if (c.server_version() >= 140000)
        sql += "SET idle_session_timeout = 0; ";
    if (c.server_version() >= 170000)
        sql += "SET transaction_timeout = 0; ";
    if (!sql.empty())
        c.exec(sql);
}

std::string conninfo_with(const std::string& conninfo, const std::vector<std::pair<std::string, std::string>>& extra)
{
    // PQconnectdbParams with expand_dbname would also work, but a single string keeps every
    // caller (replication and ordinary connections) on one code path. Rebuild as key=value.
    // `options` is the exception: the operator's (a provider's endpoint=..., -c settings) are
    // kept and ours follow them, so that for a setting both give, ours wins (the server applies
    // the -c switches in order).
    std::string out;
    std::string operator_options;
    for (const auto& [keyword, value] : parse_conninfo(conninfo)) {
        bool overridden = false;
        for (const auto& [k, v] : extra)
            overridden = overridden || k == keyword;
        if (keyword == "options" && overridden)
            operator_options = value;
        else if (!overridden)
            out += keyword + "=" + conninfo_quote(value) + " ";
    }
    for (const auto& [k, v] : extra)
        out += k + "=" + conninfo_quote(k == "options" && !operator_options.empty() ? operator_options + " " + v : v) +
               " ";
    if (!out.empty())
        out.pop_back();
    return out;
}

} // namespace pgshift::pg
