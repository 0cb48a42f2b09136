// CLI client commands: talks to the daemon's HTTP control plane (Boost.Beast, synchronous).
#include "pgshift/daemon/client.hpp"

#include "pgshift/common/address.hpp"

#include "pgshift/config/config.hpp"
#include "pgshift/daemon/run.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

namespace pgshift::daemon {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

namespace {

struct Endpoint {
    std::string host;
    std::string port;
    std::string token;
    std::string url; ///< how error messages name the daemon
};

class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The daemon could not be reached, or did not answer: "<step>: <reason>".
class ReachError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Throws ReachError naming the step. Only ec.message(): the what() of Boost's system_error
/// appends Boost's source file and function, which mean nothing to an operator (issue 7).
void check(beast::error_code ec, const char* step)
{
    if (ec)
        throw ReachError(std::string(step) + ": " + ec.message());
}

/// Splits "host:port" or "[v6]:port" (parse_host_port), as strings.
std::pair<std::string, std::string> split_host_port(const std::string& hp)
{
    std::string why;
    auto a = parse_host_port(hp, why);
    if (!a)
        throw UsageError("invalid address " + hp + ": " + why);
    return {a->host, std::to_string(a->port)};
}

Endpoint resolve_endpoint(const ClientOptions& o)
{
    if (!o.url.empty()) {
        std::string rest = o.url;
        if (rest.rfind("http://", 0) == 0)
            rest = rest.substr(7);
        else if (rest.find("://") != std::string::npos)
            throw UsageError("only http:// URLs are supported: " + o.url);
        rest = rest.substr(0, rest.find('/'));
        auto [h, p] = split_host_port(rest);
        return {h, p, config::read_token_file(o.token_file), o.url};
    }
    if (o.config_path.empty())
        throw UsageError("give --config FILE or --url URL to find the daemon");
    auto cfg = config::load_from_file(o.config_path, config::process_env());
    auto [h, p] = split_host_port(cfg.control.listen);
    if (h == "0.0.0.0" || h.empty())
        h = "127.0.0.1";
    else if (h == "::")
        h = "::1";
    const std::string url = "http://" + (h.find(':') == std::string::npos ? h : "[" + h + "]") + ":" + p;
    return {h, p, config::read_token_file(o.token_file.empty() ? cfg.control.token_file : o.token_file), url};
}

struct Reply {
    unsigned status = 0;
    json::value body;
};

Reply request(const Endpoint& ep, http::verb method, const std::string& target)
{
    asio::io_context ioc;
    asio::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    beast::error_code ec;
    auto endpoints = resolver.resolve(ep.host, ep.port, ec);
    check(ec, "resolve");
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(endpoints, ec);
    check(ec, "connect");
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, ep.host);
    req.set(http::field::user_agent, "pgshift-cli");
    if (!ep.token.empty())
        req.set(http::field::authorization, "Bearer " + ep.token);
    if (method == http::verb::post) {
        req.set(http::field::content_type, "application/json");
        req.body() = "{}";
        req.prepare_payload();
    }
    http::write(stream, req, ec);
    check(ec, "write");
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res, ec);
    check(ec, "read");
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec); // the answer is in; errors do not matter
    Reply r;
    r.status = res.result_int();
    boost::system::error_code jec;
    r.body = json::parse(res.body(), jec);
    if (jec)
        r.body = json::string(res.body());
    return r;
}

std::string str(const json::value& v)
{
    if (v.is_string())
        return std::string(v.as_string());
    if (v.is_null())
        return "-";
    if (v.is_double()) {
        char b[32];
        std::snprintf(b, sizeof b, "%.3f", v.as_double());
        return b;
    }
    return json::serialize(v);
}

const json::value& at(const json::value& v, std::initializer_list<const char*> path)
{
    static const json::value null;
    const json::value* cur = &v;
    for (const char* k : path) {
        if (!cur->is_object())
            return null;
        auto* next = cur->as_object().if_contains(k);
        if (!next)
            return null;
        cur = next;
    }
    return *cur;
}

int report_error(const Reply& r)
{
    std::cerr << "pgshift: the daemon answered " << r.status << ": " << str(at(r.body, {"error"})) << "\n";
    if (auto* reasons = r.body.is_object() ? r.body.as_object().if_contains("reasons") : nullptr)
        if (reasons->is_array())
            for (const auto& x : reasons->as_array())
                std::cerr << "  - " << str(x) << "\n";
    return k_exit_failure;
}

std::string human_bytes(double b)
{
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
    return buf;
}

double num(const json::value& v)
{
    if (v.is_double())
        return v.as_double();
    if (v.is_int64())
        return static_cast<double>(v.as_int64());
    if (v.is_uint64())
        return static_cast<double>(v.as_uint64());
    return 0;
}

/// The initial copy's per-table view (largest tables first), while a copy has tables.
void print_copy_tables(const json::value& s)
{
    const auto& tables = at(s, {"initial_copy", "tables"});
    if (!tables.is_array() || tables.as_array().empty())
        return;
    const auto& eta = at(s, {"initial_copy", "eta_seconds"});
    std::string line = std::to_string(static_cast<int>(num(at(s, {"initial_copy", "percent"})))) + "% of the heap, " +
                       human_bytes(num(at(s, {"initial_copy", "bytes_per_second"}))) + "/s, " +
                       std::to_string(static_cast<long long>(num(at(s, {"initial_copy", "rows_per_second"})))) +
                       " rows/s, " + str(at(s, {"initial_copy", "sessions"})) + " session(s)";
    if (eta.is_number() && str(at(s, {"initial_copy", "tables_done"})) != str(at(s, {"initial_copy", "tables_total"})))
        line += ", about " + std::to_string(static_cast<long long>(num(eta) + 0.5)) + " s left";
    std::printf("%-22s %s\n", "copy progress", line.c_str());
    std::printf("  %-40s %-8s %6s %14s %12s %12s\n", "table", "state", "done", "rows", "copied", "size");
    for (const auto& t : tables.as_array())
        std::printf("  %-40s %-8s %5.0f%% %14s %12s %12s\n", str(at(t, {"table"})).c_str(),
                    str(at(t, {"state"})).c_str(), num(at(t, {"percent"})), str(at(t, {"rows"})).c_str(),
                    human_bytes(num(at(t, {"bytes"}))).c_str(), human_bytes(num(at(t, {"size_bytes"}))).c_str());
}

void print_status_table(const json::value& s)
{
    auto row = [](const char* k, const std::string& v) { std::printf("%-22s %s\n", k, v.c_str()); };
    row("name", str(at(s, {"name"})));
    row("version", str(at(s, {"version"})));
    row("state", str(at(s, {"state"})) + (at(s, {"paused"}).is_bool() && at(s, {"paused"}).as_bool() ? " (paused)" : ""));
    row("direction", str(at(s, {"direction"})));
    auto endpoint = [&](const char* name) {
        bool up = at(s, {name, "connected"}).is_bool() && at(s, {name, "connected"}).as_bool();
        return std::string(up ? "connected" : "disconnected") + ", PostgreSQL " + str(at(s, {name, "server_version"}));
    };
    row("source", endpoint("source"));
    row("target", endpoint("target"));
    row("lag", str(at(s, {"lag", "bytes"})) + " bytes, " + str(at(s, {"lag", "seconds"})) + " s");
    row("lsn received", str(at(s, {"lsn", "received"})));
    row("lsn applied", str(at(s, {"lsn", "applied"})));
    row("lsn confirmed", str(at(s, {"lsn", "confirmed"})));
    row("transactions applied", str(at(s, {"counters", "transactions_applied"})));
    row("changes applied", str(at(s, {"counters", "changes_applied"})));
    row("initial copy", str(at(s, {"initial_copy", "tables_done"})) + "/" +
                            str(at(s, {"initial_copy", "tables_total"})) + " tables, " +
                            str(at(s, {"initial_copy", "rows_copied"})) + " rows");
    print_copy_tables(s);
    if (at(s, {"apply", "workers"}).is_int64()) {
        std::string states;
        if (auto* list = at(s, {"apply", "worker_states"}).is_array() ? &at(s, {"apply", "worker_states"}).as_array()
                                                                       : nullptr)
            for (const auto& w : *list)
                states += (states.empty() ? "" : " ") + str(w);
        row("apply workers", str(at(s, {"apply", "workers"})) + " [" + states + "], " +
                                 str(at(s, {"apply", "batches_in_flight"})) + " batch(es) in flight");
    }
    if (at(s, {"cutover", "id"}).is_string()) {
        std::string op = str(at(s, {"cutover", "id"})) + ": " + str(at(s, {"cutover", "phase"}));
        const auto& d = at(s, {"cutover", "write_downtime_seconds"});
        if (d.is_number() && num(d) > 0) {
            char buf[64];
            std::snprintf(buf, sizeof buf, ", write downtime %.3f s", num(d));
            op += buf;
        }
        if (at(s, {"cutover", "error"}).is_string())
            op += " (" + str(at(s, {"cutover", "error"})) + ")";
        row("last cutover/rollback", op);
    }
    // The current error (failed, or retrying) apart from a resolved one kept for the record.
    if (auto current = str(at(s, {"current_error"})); !current.empty())
        row("error", current);
    else if (at(s, {"last_error"}).is_string())
        row("last error", "(resolved) at " + str(at(s, {"last_error_at"})) + ": " + str(at(s, {"last_error"})));
    if (auto* tables = at(s, {"tables_not_replicated"}).is_array() ? &at(s, {"tables_not_replicated"}).as_array()
                                                                      : nullptr)
        for (const auto& t : *tables)
            row("NOT REPLICATED", str(t));
    if (auto* diffs = at(s, {"schema_differences"}).is_array() ? &at(s, {"schema_differences"}).as_array() : nullptr)
        for (const auto& d : *diffs)
            row("schema", str(d));
}

/// POSTs an operation and, with --wait, polls its GET endpoint (`get_path`) until it ends.
int run_operation(const Endpoint& ep, const std::string& path, const std::string& get_path, bool wait)
{
    auto r = request(ep, http::verb::post, path);
    if (r.status != 200 && r.status != 202)
        return report_error(r);
    std::cout << json::serialize(r.body) << "\n";
    if (!wait)
        return k_exit_ok;
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        auto g = request(ep, http::verb::get, get_path);
        if (g.status != 200)
            return report_error(g);
        auto phase = str(at(g.body, {"phase"}));
        auto state = str(at(g.body, {"state"}));
        if (phase == "done" || state == "done" || state == "match") {
            std::cout << json::serialize(g.body) << "\n";
            return k_exit_ok;
        }
        if (phase == "failed" || phase == "aborted" || state == "mismatch" || state == "error") {
            std::cout << json::serialize(g.body) << "\n";
            return k_exit_failure;
        }
    }
}

} // namespace

int run_client(const std::string& command, const ClientOptions& options)
{
    std::string daemon_url; // known once the endpoint is resolved, for ReachError
    try {
        auto ep = resolve_endpoint(options);
        daemon_url = ep.url;
        if (command == "status") {
            auto r = request(ep, http::verb::get, "/v1/status");
            if (r.status != 200)
                return report_error(r);
            if (options.json)
                std::cout << json::serialize(r.body) << "\n";
            else
                print_status_table(r.body);
            return k_exit_ok;
        }
        if (command == "lag") {
            auto r = request(ep, http::verb::get, "/v1/lag");
            if (r.status != 200)
                return report_error(r);
            std::cout << str(at(r.body, {"bytes"})) << " bytes, " << str(at(r.body, {"seconds"})) << " s (source "
                      << str(at(r.body, {"source_lsn"})) << ", applied " << str(at(r.body, {"applied_lsn"})) << ")\n";
            return k_exit_ok;
        }
        if (command == "pause" || command == "resume") {
            auto r = request(ep, http::verb::post, "/v1/" + command);
            if (r.status != 200)
                return report_error(r);
            std::cout << "state: " << str(at(r.body, {"state"})) << "\n";
            return k_exit_ok;
        }
        if (command == "verify")
            return run_operation(ep, "/v1/verify", "/v1/verify", options.wait);
        if (command == "cutover" || command == "rollback")
            return run_operation(ep, "/v1/" + command, "/v1/cutover", options.wait);
        if (command == "finish") {
            auto r = request(ep, http::verb::post, "/v1/finish");
            if (r.status != 202)
                return report_error(r);
            std::cout << "finishing: the daemon drops pgshift's slots, publications and origins on both servers, "
                         "then exits\n";
            return k_exit_ok;
        }
        throw UsageError("unknown command " + command);
    } catch (const UsageError& e) {
        std::cerr << "pgshift: " << e.what() << "\n";
        return k_exit_usage;
    } catch (const config::ConfigErrors& e) {
        for (const auto& p : e.problems())
            std::cerr << p << "\n";
        return k_exit_config;
    } catch (const ReachError& e) {
        std::cerr << "pgshift: cannot reach the daemon at " << daemon_url << ": " << e.what() << "\n";
        return k_exit_failure;
    } catch (const std::exception& e) {
        std::cerr << "pgshift: " << e.what() << "\n";
        return k_exit_failure;
    }
}

} // namespace pgshift::daemon
