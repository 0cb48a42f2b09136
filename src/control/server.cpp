// The control-plane HTTP server: Beast sessions on one thread, routing to StatusProvider calls.
//
// Design notes
// - Shape of Beast's example/advanced/server: an acceptor, a session per connection with
//   do_x/on_x handler pairs, body and header limits, and every failure logged with the step
//   that failed. All of it runs on one thread with a private io_context, so the io_context is
//   an implicit strand: sessions, the acceptor and the session registry need no locks. Only
//   `active` is atomic, because connections() may be read from other threads.
// - Read deadlines are a per-session steady_timer rather than tcp_stream::expires_after,
//   because a tcp_stream timeout closes the socket and SPEC section 3 wants slow clients to
//   get a 4xx: on expiry the timer cancels the pending read and the session answers 408 if the
//   client had sent part of a request, or just closes if it sent nothing. Writes and the final
//   drain do use expires_after: a client that does not read has no one to tell.
// - A session waiting for the first byte of a request (just accepted, or between keep-alive
//   requests) waits for readability without reading, so that it is known to be idle: it holds
//   no request, and closing it loses nothing a client would not retry.
// - A request that ends the connection (4xx for malformed, oversized or slow requests) is
//   answered, then the send side is shut down and unread input is drained for a short while:
//   closing with unread bytes would make the kernel send a reset, which can destroy the
//   response before the client reads it.
// - At most max_connections sessions hold a socket, so a flood cannot starve the daemon of
//   descriptors or memory. A probe (/livez, /metrics) must still get through (issue 7: 64
//   kept-alive scrapers, or 200 silent connections, used to lock it out), so a connection that
//   arrives at the cap closes the session that has been idle longest to make room. Sessions
//   mid-request are never evicted; only when every session is mid-request is the newcomer
//   closed at once. An evicted session's socket is closed at once; its object goes when its
//   aborted handler runs, so `active` may briefly exceed the cap, descriptors do not.
//   XXX: max_connections clients all trickling requests still lock probes out, for at most the
//   header timeout each; telling a slow client from a slow link is not worth the guesswork here.
// - Handlers never block: they call StatusProvider, whose contract is "no database round trip".
//   A provider exception becomes a 500 for that request only.
#include "pgshift/control/server.hpp"

#include "pgshift/common/address.hpp"
#include "pgshift/common/errors.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/common/utf8.hpp"
#include "pgshift/control/metrics.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cmath>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace pgshift::control {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace json = boost::json;
using tcp = net::ip::tcp;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr const char* k_json = "application/json";
/// Drained bytes after a closing response; beyond this the client is not worth waiting for.
constexpr std::size_t k_max_drain_bytes = 1024 * 1024;

class Session;

/// State shared by the acceptor and the sessions. Outlives the io_context (see Impl).
struct Shared {
    Shared(std::string token_in, StatusProvider& provider_in, std::string version_in, ServerLimits limits_in)
        : provider(provider_in), version(std::move(version_in)), limits(limits_in), token_(std::move(token_in))
    {
    }

    /// The bearer token now (a copy: set_token() may replace it from another thread).
    [[nodiscard]] std::string token() const
    {
        std::lock_guard lock(token_mutex_);
        return token_;
    }
    void set_token(std::string token)
    {
        std::lock_guard lock(token_mutex_);
        token_ = std::move(token);
    }

    StatusProvider& provider;
    const std::string version;
    const ServerLimits limits;
    std::atomic<std::size_t> active{0};
    /// Open sessions, so that stop() can close them. Server thread only.
    std::unordered_set<Session*> sessions;

private:
    mutable std::mutex token_mutex_;
    std::string token_; // guarded by token_mutex_
};

// ---------------------------------------------------------------------------------------------
// Responses and routes: pure functions of the request and the provider.

struct Reply {
    http::status status = http::status::ok;
    std::string body;
    std::string content_type = k_json;
    std::vector<std::pair<http::field, std::string>> headers;
    bool close = false; ///< end the connection after this response
};

/// Text for a JSON reply: request targets (or a PostgreSQL message in another encoding) may
/// hold any bytes, and Boost.JSON serializes strings byte for byte.
json::string valid_utf8(std::string_view s)
{
    return json::string(pgshift::valid_utf8(s));
}

Reply json_reply(http::status status, const json::value& body)
{
    Reply r;
    r.status = status;
    r.body = json::serialize(body);
    return r;
}

Reply error_reply(http::status status, std::string_view message, const std::vector<std::string>& reasons = {})
{
    json::array list;
    for (const auto& reason : reasons)
        list.emplace_back(valid_utf8(reason));
    return json_reply(status, json::object{{"error", valid_utf8(message)}, {"reasons", std::move(list)}});
}

json::value number_or_null(double v)
{
    // JSON has no NaN or infinity; null says "unknown" without inventing a value.
    return std::isfinite(v) ? json::value(v) : json::value(nullptr);
}

json::value string_or_null(const std::string& s)
{
    return s.empty() ? json::value(nullptr) : json::value(valid_utf8(s));
}

json::object endpoint_json(const EndpointStatus& e)
{
    return {{"connected", e.connected}, {"server_version", string_or_null(e.server_version)}};
}

json::object lag_json(const StatusSnapshot& s)
{
    return {{"bytes", s.lag_bytes},
            {"seconds", number_or_null(s.lag_seconds)},
            {"source_lsn", Lsn(s.source_lsn).str()},
            {"applied_lsn", Lsn(s.applied_lsn).str()}};
}

json::object apply_json(const StatusSnapshot& s)
{
    const auto& a = s.apply;
    json::array states;
    for (const auto& w : a.worker_states)
        states.emplace_back(w);
    return {{"workers", a.workers},
            {"worker_states", std::move(states)},
            {"batches_in_flight", a.batches_dispatched > a.batches_committed ? a.batches_dispatched - a.batches_committed : 0},
            {"batches_committed", a.batches_committed},
            {"wait_seconds",
             {{"dispatch", a.wait_dispatch_seconds}, {"dependency", a.wait_dependency_seconds}, {"commit", a.wait_commit_seconds}}},
            {"retries", {{"conflict", a.retries_conflict}, {"blocked", a.retries_blocked}}},
            {"statements", a.statements},
            {"rows_written", a.rows_written},
            {"compaction_fallbacks", a.compaction_fallbacks}};
}

json::object initial_copy_json(const decltype(StatusSnapshot::initial_copy)& copy)
{
    json::array tables;
    for (const auto& t : copy.tables)
        tables.push_back(json::object{{"table", valid_utf8(t.table)},
                                      {"state", t.state},
                                      {"rows", t.rows},
                                      {"bytes", t.bytes},
                                      {"size_bytes", t.size_bytes},
                                      {"percent", t.percent}});
    return {{"tables_total", copy.tables_total},
            {"tables_done", copy.tables_done},
            {"tables_copying", copy.tables_copying},
            {"rows_copied", copy.rows_copied},
            {"bytes_copied", copy.bytes_copied},
            {"sessions", copy.sessions},
            {"percent", copy.percent},
            {"rows_per_second", copy.rows_per_second},
            {"bytes_per_second", copy.bytes_per_second},
            {"eta_seconds", copy.eta_seconds < 0 ? json::value(nullptr) : json::value(copy.eta_seconds)},
            {"tables", std::move(tables)}};
}

json::object switch_json(const SwitchReport& r)
{
    json::array phases;
    for (const auto& p : r.phases)
        phases.emplace_back(json::object{{"phase", p.name}, {"seconds", number_or_null(p.seconds)}});
    auto text_or_null = [](const std::string& v) { return v.empty() ? json::value(nullptr) : json::value(valid_utf8(v)); };
    return json::object{{"id", text_or_null(r.id)},
                        {"kind", text_or_null(r.kind)},
                        {"phase", text_or_null(r.phase)},
                        {"started_at", text_or_null(r.started_at)},
                        {"fenced_at", text_or_null(r.fenced_at)},
                        {"finished_at", text_or_null(r.finished_at)},
                        {"write_downtime_seconds", number_or_null(r.write_downtime_seconds)},
                        {"final_lsn", text_or_null(r.final_lsn)},
                        {"error", text_or_null(r.error)},
                        {"phases", std::move(phases)}};
}

json::object status_json(const StatusSnapshot& s, const std::string& build_version)
{
    json::array reasons;
    for (const auto& reason : s.not_ready_reasons)
        reasons.emplace_back(valid_utf8(reason));
    json::array unreplicated, schema_differences;
    for (const auto& line : s.tables_not_replicated)
        unreplicated.emplace_back(valid_utf8(line));
    for (const auto& line : s.schema_differences)
        schema_differences.emplace_back(valid_utf8(line));
    const auto& copy = s.initial_copy;
    return {
        {"name", s.name},
        // The provider may leave version empty: the server was given the build version anyway.
        {"version", s.version.empty() ? build_version : s.version},
        {"state", s.state},
        {"direction", s.direction},
        {"paused", s.paused},
        {"ready", s.not_ready_reasons.empty()},
        {"not_ready_reasons", std::move(reasons)},
        {"source", endpoint_json(s.source)},
        {"target", endpoint_json(s.target)},
        {"lag", lag_json(s)},
        {"lsn",
         {{"received", Lsn(s.received_lsn).str()},
          {"applied", Lsn(s.applied_lsn).str()},
          {"confirmed", Lsn(s.confirmed_lsn).str()}}},
        {"initial_copy", initial_copy_json(copy)},
        {"counters",
         {{"transactions_applied", s.transactions_applied},
          {"changes_applied", s.changes_insert + s.changes_update + s.changes_delete + s.changes_truncate},
          {"changes_applied_by_op",
           {{"insert", s.changes_insert},
            {"update", s.changes_update},
            {"delete", s.changes_delete},
            {"truncate", s.changes_truncate}}}}},
        {"queue", {{"changes", s.queue_changes}, {"bytes", s.queue_bytes}}},
        {"apply", apply_json(s)},
        {"verify",
         {{"state", s.verify.state},
          {"tables_total", s.verify.tables_total},
          {"tables_done", s.verify.tables_done},
          {"tables_match", s.verify.tables_match},
          {"tables_mismatch", s.verify.tables_mismatch},
          {"tables_error", s.verify.tables_error},
          {"rows_compared", s.verify.rows_compared},
          {"rows_per_second", s.verify.rows_per_second}}},
        {"cutover", switch_json(s.cutover)},
        {"current_error", valid_utf8(s.current_error)},
        {"last_error", string_or_null(s.last_error)},
        {"last_error_at", string_or_null(s.last_error_at)},
        {"tables_not_replicated", std::move(unreplicated)},
        {"schema_differences", std::move(schema_differences)},
        {"spill_errors", s.spill_errors},
    };
}

/// Compares in time that depends only on the lengths, never on where the first difference
/// is, so that response timing does not reveal a token prefix. The token length is not secret.
bool constant_time_equal(std::string_view a, std::string_view b)
{
    const std::size_t n = std::max(a.size(), b.size());
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (std::size_t i = 0; i < n; ++i) {
        const auto x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0u;
        const auto y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0u;
        diff |= x ^ y;
    }
    return diff == 0;
}

/// RFC 6750 section 2.1: `Bearer <token>`, scheme case-insensitive (RFC 9110 section 11.1).
bool authorized(const std::string& token, std::string_view header)
{
    if (token.empty())
        return true;
    constexpr std::string_view scheme = "bearer";
    if (header.size() <= scheme.size() || !beast::iequals(header.substr(0, scheme.size()), scheme) ||
        header[scheme.size()] != ' ')
        return false;
    auto credentials = header.substr(scheme.size());
    while (!credentials.empty() && credentials.front() == ' ')
        credentials.remove_prefix(1);
    while (!credentials.empty() && (credentials.back() == ' ' || credentials.back() == '\t'))
        credentials.remove_suffix(1);
    return constant_time_equal(credentials, token);
}

struct Context {
    Shared& shared;
    const Request& request;
    const std::string& peer;
};

Reply on_livez(Context& c)
{
    if (c.shared.provider.alive())
        return json_reply(http::status::ok, json::object{{"status", "alive"}});
    return error_reply(http::status::service_unavailable, "not alive", {"the daemon's loops are not running"});
}

Reply on_readyz(Context& c)
{
    auto s = c.shared.provider.snapshot();
    if (s.not_ready_reasons.empty())
        return json_reply(http::status::ok, json::object{{"status", "ready"}});
    return error_reply(http::status::service_unavailable, "not ready", s.not_ready_reasons);
}

Reply on_metrics(Context& c)
{
    Reply r;
    r.body = render_metrics(c.shared.provider.snapshot(), c.shared.version);
    r.content_type = k_metrics_content_type;
    return r;
}

Reply on_status(Context& c)
{
    return json_reply(http::status::ok, status_json(c.shared.provider.snapshot(), c.shared.version));
}

Reply on_lag(Context& c)
{
    return json_reply(http::status::ok, lag_json(c.shared.provider.snapshot()));
}

Reply on_pause(Context& c)
{
    // Audit trail for state changes; the peer is the only identity a bearer token gives us.
    spdlog::info("control: pause requested by {}", c.peer);
    c.shared.provider.pause();
    return on_status(c);
}

Reply on_resume(Context& c)
{
    spdlog::info("control: resume requested by {}", c.peer);
    c.shared.provider.resume();
    return on_status(c);
}

/// 202 with the operation, or the 409/412 of OperationStart with its reasons.
Reply operation_reply(const OperationStart& o, const json::value& accepted)
{
    if (o.status == 202)
        return json_reply(http::status::accepted, accepted);
    return error_reply(static_cast<http::status>(o.status), o.error, o.reasons);
}

Reply start_switch(Context& c, const std::string& kind)
{
    spdlog::info("control: {} requested by {}", kind, c.peer);
    auto o = c.shared.provider.start_switch(kind);
    if (o.status != 202)
        spdlog::warn("control: {} refused ({}): {}{}", kind, o.status, o.error,
                     o.reasons.empty() ? "" : ": " + o.reasons.front() + (o.reasons.size() > 1 ? ", ..." : ""));
    return operation_reply(o, switch_json(o.operation));
}

Reply on_cutover_post(Context& c)
{
    return start_switch(c, "cutover");
}
Reply on_cutover_get(Context& c)
{
    return json_reply(http::status::ok, switch_json(c.shared.provider.switch_report()));
}
Reply on_rollback_post(Context& c)
{
    return start_switch(c, "rollback");
}
Reply on_finish_post(Context& c)
{
    spdlog::info("control: finish requested by {}", c.peer);
    auto o = c.shared.provider.start_finish();
    return operation_reply(o, json::object{{"state", "finishing"}});
}
json::object verify_json(const VerifyReport& r)
{
    json::array tables;
    for (const auto& t : r.tables) {
        json::array ranges, keys;
        for (const auto& x : t.ranges)
            ranges.emplace_back(valid_utf8(x));
        for (const auto& k : t.keys)
            keys.emplace_back(json::object{{"key", valid_utf8(k.key)}, {"kind", k.kind}});
        json::object o{{"table", valid_utf8(t.table)},
                       {"result", t.result},
                       {"compared_by", t.keyed ? "key" : "whole table"},
                       {"source_rows", t.source_rows},
                       {"target_rows", t.target_rows}};
        if (!ranges.empty())
            o["ranges"] = std::move(ranges);
        if (!keys.empty())
            o["keys"] = std::move(keys);
        if (t.keys_truncated)
            o["keys_truncated"] = true;
        if (!t.error.empty())
            o["error"] = valid_utf8(t.error);
        tables.emplace_back(std::move(o));
    }
    json::object o{{"id", r.id},
                   {"state", r.state},
                   {"checksums", r.checksums},
                   {"lsn", r.lsn},
                   {"applied_at_start", r.applied_at_start},
                   {"started_at", r.started_at},
                   {"finished_at", r.finished_at},
                   {"tables_total", r.tables.size()},
                   {"tables_done", r.tables_done},
                   {"rows_compared", r.rows_compared},
                   {"seconds", r.seconds},
                   {"tables", std::move(tables)}};
    if (!r.error.empty())
        o["error"] = valid_utf8(r.error);
    return o;
}

Reply on_verify_post(Context& c)
{
    // Optional body {"checksums": false} for counts only; default: counts and checksums.
    bool checksums = true;
    if (!c.request.body().empty()) {
        boost::system::error_code ec;
        auto v = json::parse(c.request.body(), ec);
        const json::value* cs = (!ec && v.is_object()) ? v.as_object().if_contains("checksums") : nullptr;
        if (ec || !v.is_object() || (cs && !cs->is_bool()))
            return error_reply(http::status::bad_request, "invalid verify request",
                               {"expected an empty body or {\"checksums\": true|false}"});
        if (cs)
            checksums = cs->as_bool();
    }
    spdlog::info("control: verify requested by {} (checksums {})", c.peer, checksums);
    if (!c.shared.provider.start_verify(checksums))
        return error_reply(http::status::conflict, "a comparison is running already",
                           {"GET /v1/verify shows its progress"});
    return json_reply(http::status::accepted, verify_json(c.shared.provider.verify_report()));
}
Reply on_verify_get(Context& c)
{
    return json_reply(http::status::ok, verify_json(c.shared.provider.verify_report()));
}

using Handler = Reply (*)(Context&);

/// A path and its handlers; a null handler means the method is not allowed. GET also serves HEAD.
struct Route {
    std::string_view path;
    Handler get;
    Handler post;
};

constexpr std::array<Route, 11> k_routes = {{
    {"/livez", on_livez, nullptr},
    {"/readyz", on_readyz, nullptr},
    {"/metrics", on_metrics, nullptr},
    {"/v1/status", on_status, nullptr},
    {"/v1/lag", on_lag, nullptr},
    {"/v1/pause", nullptr, on_pause},
    {"/v1/resume", nullptr, on_resume},
    {"/v1/cutover", on_cutover_get, on_cutover_post},
    {"/v1/rollback", nullptr, on_rollback_post},
    {"/v1/finish", nullptr, on_finish_post},
    {"/v1/verify", on_verify_get, on_verify_post},
}};

std::string allow_header(const Route& r)
{
    if (r.get && r.post)
        return "GET, HEAD, POST";
    return r.get ? "GET, HEAD" : "POST";
}

Reply route(Context& c)
{
    const auto& req = c.request;
    std::string_view target = req.target();
    if (target.empty() || target.front() != '/') {
        // Well-formed HTTP but not a request we can make sense of: treat like a parse error.
        auto r = error_reply(http::status::bad_request, "malformed request",
                             {"the request target must be an absolute path"});
        r.close = true;
        return r;
    }
    // Queries are accepted and ignored: no route takes parameters yet.
    target = target.substr(0, target.find('?'));

    const Route* found = nullptr;
    for (const auto& r : k_routes)
        if (r.path == target)
            found = &r;
    if (!found)
        return error_reply(http::status::not_found, "no such endpoint", {std::string(target)});

    Handler handler = nullptr;
    const auto method = req.method();
    if (method == http::verb::get || method == http::verb::head)
        handler = found->get;
    else if (method == http::verb::post)
        handler = found->post;
    if (!handler) {
        auto r = error_reply(http::status::method_not_allowed,
                             std::string(req.method_string()) + " is not allowed on " + std::string(target));
        r.headers.emplace_back(http::field::allow, allow_header(*found));
        return r;
    }

    if (method == http::verb::post && !authorized(c.shared.token(), req[http::field::authorization])) {
        const bool sent = !req[http::field::authorization].empty();
        auto r = error_reply(http::status::unauthorized,
                             sent ? "invalid bearer token" : "missing bearer token",
                             {"POST requests need the header \"Authorization: Bearer <token>\""});
        r.headers.emplace_back(http::field::www_authenticate, "Bearer");
        return r;
    }
    return handler(c);
}

// ---------------------------------------------------------------------------------------------
// Transport.

void fail(beast::error_code ec, const char* step, const std::string& peer)
{
    // Client misbehaviour is routine for a network service: debug level, never an alert.
    spdlog::debug("control: {}: {}: {}", peer, step, ec.message());
}

bool is_http_error(beast::error_code ec)
{
    return ec.category() == http::make_error_code(http::error::bad_target).category();
}

using Clock = net::steady_timer::clock_type;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, Shared& shared)
        : stream_(std::move(socket)), deadline_(stream_.get_executor()), shared_(shared), accepted_(Clock::now())
    {
        beast::error_code ec;
        auto remote = stream_.socket().remote_endpoint(ec);
        peer_ = ec ? std::string("unknown peer") : remote.address().to_string() + ":" + std::to_string(remote.port());
        deadline_.expires_at(net::steady_timer::time_point::max());
        ++shared_.active;
        shared_.sessions.insert(this);
    }

    ~Session()
    {
        shared_.sessions.erase(this);
        --shared_.active;
    }

    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void run() { do_read_request(); }

    /// True while the session waits for the first byte of a request and none has arrived:
    /// closing it now loses no request (see the design notes).
    [[nodiscard]] bool idle() const
    {
        if (!idle_)
            return false;
        // A request may be in the socket with its handler not run yet: that one is not idle.
        beast::error_code ec;
        return stream_.socket().available(ec) == 0 || ec;
    }

    /// Since when idle() has held; meaningful only while it does.
    [[nodiscard]] Clock::time_point idle_since() const { return idle_since_; }

    [[nodiscard]] const std::string& peer() const { return peer_; }

    /// Ends the connection now; pending operations complete with operation_aborted.
    void close()
    {
        idle_ = false; // closed: not a candidate for eviction any more
        deadline_.cancel();
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.close();
    }

private:
    // Read deadlines (see the design notes): arm before a read, disarm in its handler.
    void arm(Clock::time_point deadline)
    {
        timed_out_ = false;
        deadline_.expires_at(deadline);
        deadline_.async_wait(beast::bind_front_handler(&Session::on_deadline, shared_from_this()));
    }

    void disarm() { deadline_.expires_at(net::steady_timer::time_point::max()); }

    void on_deadline(beast::error_code ec)
    {
        // A re-armed or disarmed timer leaves a stale completion behind; its expiry tells.
        if (ec == net::error::operation_aborted || deadline_.expiry() > Clock::now())
            return;
        timed_out_ = true;
        stream_.cancel();
    }

    /// The deadline for the header of the request about to be read: the first request's
    /// runs from accept, a follow-up's from its first byte.
    Clock::time_point header_deadline() const
    {
        return (first_request_ ? accepted_ : Clock::now()) + shared_.limits.header_timeout;
    }

    void do_read_request()
    {
        // Pipelined bytes are a request already under way.
        if (buffer_.size() > 0) {
            do_read_header(header_deadline());
            return;
        }
        // Idle until the first byte: a new connection has until its header deadline to start, a
        // keep-alive one may rest for the idle timeout, longer than a request may take to arrive.
        idle_ = true;
        idle_since_ = Clock::now();
        arm(first_request_ ? header_deadline() : idle_since_ + shared_.limits.idle_timeout);
        stream_.socket().async_wait(tcp::socket::wait_read,
                                    beast::bind_front_handler(&Session::on_readable, shared_from_this()));
    }

    void on_readable(beast::error_code ec)
    {
        idle_ = false;
        disarm();
        if (ec) {
            // Nothing received: an idle, probing or evicted connection, not a request to answer.
            fail(ec, timed_out_ ? (first_request_ ? "header timeout" : "idle timeout") : "wait for request", peer_);
            return close();
        }
        const auto deadline = header_deadline();
        first_request_ = false;
        do_read_header(deadline);
    }

    void do_read_header(Clock::time_point deadline)
    {
        parser_.emplace();
        parser_->header_limit(shared_.limits.header_limit);
        parser_->body_limit(shared_.limits.body_limit);
        arm(deadline);
        http::async_read_header(stream_, buffer_, *parser_,
                                beast::bind_front_handler(&Session::on_read_header, shared_from_this()));
    }

    void on_read_header(beast::error_code ec, std::size_t)
    {
        disarm();
        if (ec)
            return on_read_error(ec, "read header");
        if (parser_->is_done())
            return handle_request();
        if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
            // The body is within the limit (checked with the header): ask for it, as curl waits.
            continue_.emplace(http::status::continue_, parser_->get().version());
            stream_.expires_after(shared_.limits.write_timeout);
            http::async_write(stream_, *continue_,
                              beast::bind_front_handler(&Session::on_write_continue, shared_from_this()));
            return;
        }
        do_read_body();
    }

    void on_write_continue(beast::error_code ec, std::size_t)
    {
        stream_.expires_never();
        if (ec) {
            fail(ec, "write 100-continue", peer_);
            return close();
        }
        do_read_body();
    }

    void do_read_body()
    {
        arm(Clock::now() + shared_.limits.body_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&Session::on_read_body, shared_from_this()));
    }

    void on_read_body(beast::error_code ec, std::size_t)
    {
        disarm();
        if (ec)
            return on_read_error(ec, "read body");
        handle_request();
    }

    void on_read_error(beast::error_code ec, const char* step)
    {
        fail(ec, step, peer_);
        if (ec == net::error::operation_aborted && timed_out_) {
            // Nothing received at all: an idle or probing connection, not a request to answer.
            if (!parser_->got_some() && buffer_.size() == 0)
                return close();
            return send_error(error_reply(http::status::request_timeout, std::string("timed out in ") + step));
        }
        if (ec == http::error::end_of_stream)
            return close(); // the client closed between requests: normal end of keep-alive
        if (ec == http::error::body_limit)
            return send_error(error_reply(http::status::payload_too_large, "request body too large",
                                          {"the limit is " + std::to_string(shared_.limits.body_limit) + " bytes"}));
        if (ec == http::error::header_limit)
            return send_error(error_reply(http::status::request_header_fields_too_large, "request header too large",
                                          {"the limit is " + std::to_string(shared_.limits.header_limit) + " bytes"}));
        if (is_http_error(ec))
            return send_error(error_reply(http::status::bad_request, "malformed request", {ec.message()}));
        close(); // connection reset and the like: nobody to answer
    }

    void handle_request()
    {
        Request req = parser_->release();
        Reply reply;
        try {
            Context context{shared_, req, peer_};
            reply = route(context);
        } catch (const std::exception& e) {
            // The provider failed for this request only; log once here, where it is answered.
            spdlog::warn("control: {} {} from {}: {}", std::string(req.method_string()), std::string(req.target()),
                         peer_, e.what());
            reply = error_reply(http::status::internal_server_error, "internal error", {e.what()});
        }
        send(std::move(reply), req.version(), req.keep_alive(), req.method() == http::verb::head);
    }

    /// Answers a request that could not be read completely; the connection cannot continue.
    void send_error(Reply reply)
    {
        reply.close = true;
        send(std::move(reply), 11, false, false);
    }

    void send(Reply reply, unsigned version, bool keep_alive, bool head)
    {
        res_ = {};
        res_.version(version);
        res_.result(reply.status);
        res_.set(http::field::server, "pgshift/" + shared_.version);
        res_.set(http::field::content_type, reply.content_type);
        // Status changes from second to second; no proxy or client should reuse an answer.
        res_.set(http::field::cache_control, "no-store");
        for (auto& [field, value] : reply.headers)
            res_.set(field, value);
        res_.keep_alive(keep_alive && !reply.close);
        if (head) {
            // HEAD: the length GET would send, and no body.
            res_.content_length(reply.body.size());
        } else {
            res_.body() = std::move(reply.body);
            res_.prepare_payload();
        }
        stream_.expires_after(shared_.limits.write_timeout);
        http::async_write(stream_, res_, beast::bind_front_handler(&Session::on_write, shared_from_this()));
    }

    void on_write(beast::error_code ec, std::size_t)
    {
        stream_.expires_never();
        if (ec) {
            fail(ec, "write", peer_);
            return close();
        }
        if (!res_.keep_alive())
            return do_linger();
        do_read_request();
    }

    void do_linger()
    {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        if (ec) {
            fail(ec, "shutdown", peer_);
            return close();
        }
        stream_.expires_after(shared_.limits.linger_timeout);
        do_drain();
    }

    void do_drain()
    {
        stream_.async_read_some(net::buffer(drain_),
                                beast::bind_front_handler(&Session::on_drain, shared_from_this()));
    }

    void on_drain(beast::error_code ec, std::size_t n)
    {
        drained_ += n;
        if (ec || drained_ > k_max_drain_bytes)
            return close(); // EOF is the normal end; a timeout or a flood ends it too
        do_drain();
    }

    beast::tcp_stream stream_;
    net::steady_timer deadline_;
    Shared& shared_;
    std::string peer_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::optional<http::response<http::empty_body>> continue_;
    Response res_;
    const Clock::time_point accepted_;
    bool first_request_ = true;
    bool timed_out_ = false;
    bool idle_ = false; ///< waiting for the first byte of a request; see idle()
    Clock::time_point idle_since_{};
    std::array<char, 4096> drain_{};
    std::size_t drained_ = 0;
};

struct ListenAddress {
    std::string host;
    std::string port;
};

/// Splits "host:port" or "[v6]:port"; throws ConfigError naming the address.
ListenAddress split_listen(const std::string& listen)
{
    auto bad = [&](const std::string& why) {
        return ConfigError("control.listen \"" + listen + "\": " + why + " (expected host:port)");
    };
    std::string why;
    auto a = parse_host_port(listen, why);
    if (!a)
        throw bad(why);
    return ListenAddress{a->host, std::to_string(a->port)};
}

} // namespace

// -------------------------------------------------------------------------------------------------

struct ControlServer::Impl {
    Impl(std::string listen_in, std::string token, StatusProvider& provider, std::string version, ServerLimits limits)
        : listen(std::move(listen_in)), shared(std::move(token), provider, std::move(version), limits)
    {
    }

    void do_accept()
    {
        acceptor.async_accept(ioc, [this](beast::error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
    }

    void on_accept(beast::error_code ec, tcp::socket socket)
    {
        if (ec == net::error::operation_aborted)
            return; // stop()
        if (ec) {
            // Typically EMFILE. Keep listening (Beast's example stops accepting for good), but
            // pause so that a persistent error does not spin the thread.
            spdlog::warn("control: accept on {}: {}", listen, ec.message());
            accept_retry.expires_after(std::chrono::milliseconds(100));
            accept_retry.async_wait([this](beast::error_code wait_ec) {
                if (!wait_ec)
                    do_accept();
            });
            return;
        }
        if (shared.active.load() >= shared.limits.max_connections) {
            if (Session* victim = longest_idle_session()) {
                // Make room (see the design notes): a probe must not be locked out by idlers.
                spdlog::debug("control: {} connections open, closing {}, idle the longest", shared.active.load(),
                              victim->peer());
                victim->close();
            } else {
                spdlog::debug("control: {} connections open, all mid-request, closing a new one",
                              shared.active.load());
                beast::error_code ignored;
                socket.close(ignored);
                return do_accept();
            }
        }
        std::make_shared<Session>(std::move(socket), shared)->run();
        do_accept();
    }

    /// The open session that has waited longest for a request, or null if every one is busy.
    /// A linear scan: it runs only at the cap, over at most max_connections sessions.
    Session* longest_idle_session()
    {
        Session* oldest = nullptr;
        for (auto* session : shared.sessions)
            if (session->idle() && (!oldest || session->idle_since() < oldest->idle_since()))
                oldest = session;
        return oldest;
    }

    void run()
    {
        // Handlers catch their own exceptions; this is the last line of defence, so that one
        // bad request cannot end the control plane.
        for (;;) {
            try {
                ioc.run();
                return;
            } catch (const std::exception& e) {
                spdlog::error("control: unexpected exception in the server thread: {}", e.what());
            }
        }
    }

    const std::string listen;
    // Destruction order matters: the io_context destroys pending handlers, and with them the
    // sessions, which unregister from `shared`; so `shared` is declared first.
    Shared shared;
    net::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    net::steady_timer accept_retry{ioc};
    std::thread thread;
    std::atomic<std::uint16_t> port{0};
    bool started = false;
};

ControlServer::ControlServer(std::string listen, std::string token, StatusProvider& provider, std::string version,
                             ServerLimits limits)
    : impl_(std::make_unique<Impl>(std::move(listen), std::move(token), provider, std::move(version), limits))
{
}

ControlServer::~ControlServer()
{
    stop();
}

void ControlServer::start()
{
    auto& m = *impl_;
    if (m.started)
        throw InternalError("ControlServer::start called twice");
    m.started = true;

    const auto address = split_listen(m.listen);
    const std::string where = "control.listen \"" + m.listen + "\": ";
    beast::error_code ec;
    tcp::resolver resolver(m.ioc);
    // Runs once at startup, before the thread: a blocking lookup (e.g. of "localhost") is fine.
    auto endpoints = resolver.resolve(address.host, address.port,
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec)
        throw ConfigError(where + "cannot resolve host \"" + address.host + "\": " + ec.message());

    std::string last_error = "no address";
    for (const auto& entry : endpoints) {
        auto endpoint = entry.endpoint();
        beast::error_code step_ec;
        m.acceptor.open(endpoint.protocol(), step_ec);
        if (!step_ec)
            m.acceptor.set_option(net::socket_base::reuse_address(true), step_ec);
        if (!step_ec)
            m.acceptor.bind(endpoint, step_ec);
        if (!step_ec)
            m.acceptor.listen(net::socket_base::max_listen_connections, step_ec);
        if (!step_ec)
            break;
        last_error = "cannot listen on " + endpoint.address().to_string() + " port " + address.port + ": " +
                     step_ec.message();
        beast::error_code ignored;
        m.acceptor.close(ignored);
    }
    if (!m.acceptor.is_open())
        throw ConfigError(where + last_error);

    m.port = m.acceptor.local_endpoint().port();
    spdlog::info("control: listening on {} port {}{}", m.acceptor.local_endpoint().address().to_string(),
                 m.port.load(), m.shared.token().empty() ? " (no token: POST requests are not authenticated)" : "");
    m.do_accept();
    m.thread = std::thread([&m] { m.run(); });
}

void ControlServer::stop() noexcept
{
    auto& m = *impl_;
    if (!m.thread.joinable())
        return;
    net::post(m.ioc, [&m] {
        beast::error_code ignored;
        m.acceptor.close(ignored);
        m.accept_retry.cancel();
        // Copy: closing does not destroy a session now, but keep the iteration independent of it.
        std::vector<Session*> open(m.shared.sessions.begin(), m.shared.sessions.end());
        for (auto* session : open)
            session->close();
        // Do not wait for the aborted handlers: the sockets are closed, and the sessions they
        // hold are destroyed with the io_context.
        m.ioc.stop();
    });
    m.thread.join();
}

std::uint16_t ControlServer::port() const
{
    return impl_->port.load();
}

void ControlServer::set_token(std::string token)
{
    impl_->shared.set_token(std::move(token));
}

std::size_t ControlServer::connections() const
{
    return impl_->shared.active.load();
}

} // namespace pgshift::control
