// Pooler detection from a conninfo: port 6543 and Supabase's pooler hosts.
#include "pgshift/check/pooler.hpp"

#include "pgshift/pg/connection.hpp"

#include <algorithm>
#include <cctype>

namespace pgshift::check {

namespace {

constexpr const char* k_transaction_pooler_port = "6543";
constexpr std::string_view k_supabase_pooler_domain = ".pooler.supabase.com";

/// libpq's comma-separated lists (host=a,b port=5432,6543); an empty string is one empty item.
std::vector<std::string> split_list(const std::string& s)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto comma = s.find(',', start);
        out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos)
            return out;
        start = comma + 1;
    }
}

bool ends_with_ci(std::string_view s, std::string_view suffix)
{
    if (s.size() < suffix.size())
        return false;
    return std::equal(suffix.begin(), suffix.end(), s.end() - static_cast<std::ptrdiff_t>(suffix.size()),
                      [](char lower, char c) { return std::tolower(static_cast<unsigned char>(c)) == lower; });
}

} // namespace

std::vector<PoolerHint> find_poolers(const std::string& conninfo, const config::EnvLookup& env)
{
    std::string host, hostaddr, port;
    for (const auto& [k, v] : pg::parse_conninfo(conninfo)) {
        if (k == "host")
            host = v;
        else if (k == "hostaddr")
            hostaddr = v;
        else if (k == "port")
            port = v;
    }
    // libpq's defaults for what the conninfo leaves out: PGHOST/PGPORT, then a local socket and 5432.
    if (host.empty() && hostaddr.empty())
        host = env("PGHOST").value_or("");
    if (port.empty())
        port = env("PGPORT").value_or("");
    auto hosts = split_list(host.empty() ? hostaddr : host);
    auto ports = split_list(port);

    std::vector<PoolerHint> out;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        // One port applies to every host; otherwise the lists pair up.
        std::string p = ports.size() == 1 ? ports[0] : (i < ports.size() ? ports[i] : "");
        if (p.empty())
            p = "5432";
        const auto& h = hosts[i];
        std::string why;
        if (p == k_transaction_pooler_port)
            why = "port 6543 is where Supabase (Supavisor) and many PgBouncer setups run a transaction pooler, "
                  "which hands each transaction to any server session; logical replication and pgshift's "
                  "replication origins need one session for the whole connection";
        else if (ends_with_ci(h, k_supabase_pooler_domain))
            why = "Supabase's pooler (Supavisor) carries no replication connection, in session mode (5432) or "
                  "transaction mode (6543)";
        if (why.empty())
            continue;
        why += ". Connect to the server directly (port 5432; on Supabase the direct connection "
               "db.<project>.supabase.co:5432)";
        out.push_back({h, p, std::move(why)});
    }
    return out;
}

} // namespace pgshift::check
