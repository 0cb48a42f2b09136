// Table digests, convergence polling and slot checks used by the integration tests.
#include "harness/sql_helpers.hpp"

#include "harness/daemon_process.hpp"

#include <functional>
#include <iostream>
#include <thread>

namespace pgshift::test {

using Clock = std::chrono::steady_clock;

TableDigest table_digest(pg::Connection& conn, const std::string& table)
{
    auto res = conn.exec("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM " +
                         table + " t");
    return TableDigest{res.str(0, 0), res.str(0, 1)};
}

std::ostream& operator<<(std::ostream& out, const TableDigest& digest)
{
    return out << "count=" << digest.count << " md5=" << digest.md5;
}

namespace {

std::string describe(const TableDigest& d) { return "count=" + d.count + " md5=" + d.md5; }

} // namespace

std::vector<std::string> compare_tables(pg::Connection& source, pg::Connection& target,
                                        const std::vector<std::string>& tables)
{
    std::vector<std::string> diffs;
    for (const auto& table : tables) {
        TableDigest s;
        TableDigest t;
        try {
            s = table_digest(source, table);
        } catch (const std::exception& e) {
            diffs.push_back(table + ": source error: " + e.what());
            continue;
        }
        try {
            t = table_digest(target, table);
        } catch (const std::exception& e) {
            diffs.push_back(table + ": target error: " + e.what());
            continue;
        }
        if (!(s == t))
            diffs.push_back(table + ": source " + describe(s) + ", target " + describe(t));
    }
    return diffs;
}

void print_replication_state(TestCluster& source, TestCluster& target, DaemonProcess& daemon)
{
    // Compact and first: CI shows only a window of output around a failure.
    auto run = [](const std::function<std::string()>& f) {
        try {
            return f();
        } catch (const std::exception& e) {
            return std::string("(") + e.what() + ")";
        }
    };
    std::cerr << "[harness] daemon " << (daemon.running() ? "running" : "not running") << "; slot "
              << run([&] {
                     auto c = source.connect(); // fresh: a restart may have broken the cached one
                     auto r = c.exec_params("SELECT coalesce(confirmed_flush_lsn::text, '-') || ' active=' || "
                                                 "active::text FROM pg_replication_slots WHERE slot_name = $1",
                                                 {daemon.slot_name()});
                     return r.rows() ? r.str(0, 0) : std::string("missing");
                 })
              << "; source wal "
              << run([&] { return source.connect().exec("SELECT pg_current_wal_lsn()::text").str(0, 0); })
              << "; target origins "
              << run([&] {
                     return target.connect()
                         .exec("SELECT coalesce(string_agg(external_id || '=' || remote_lsn::text, ', '), 'none') "
                               "FROM pg_replication_origin_status")
                         .str(0, 0);
                 })
              << '\n';
    auto status = run_command({pgshift_binary().string(), "status", "--json", "--url", daemon.control_url()});
    std::cerr << "[harness] pgshift status: " << status.output << '\n';
    std::cerr << "[harness] last log lines:\n" << daemon.log_tail(20) << std::flush;
}

bool wait_until_converged(TestCluster& source, TestCluster& target, const std::vector<std::string>& tables,
                          std::chrono::milliseconds timeout, DaemonProcess* daemon)
{
    const auto deadline = Clock::now() + timeout;
    std::vector<std::string> diffs;
    for (;;) {
        // Fresh connections each round: a broken one must not make the whole wait fail.
        try {
            auto s = source.connect();
            auto t = target.connect();
            diffs = compare_tables(s, t, tables);
        } catch (const std::exception& e) {
            diffs = {std::string("cannot compare: ") + e.what()};
        }
        if (diffs.empty())
            return true;
        if (Clock::now() >= deadline)
            break;
        if (daemon && !daemon->running()) {
            std::cerr << "[harness] the daemon exited while waiting for convergence\n";
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    std::cerr << "[harness] not converged after " << timeout.count() << " ms; differing tables:\n"
              << join_lines(diffs) << '\n';
    if (daemon)
        print_replication_state(source, target, *daemon);
    return false;
}

int slot_active_pid(TestCluster& source, const std::string& slot_name)
{
    auto res = source.exec_params(
        "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1 AND active", {slot_name});
    return res.rows() == 0 ? 0 : std::stoi(res.str(0, 0));
}

bool wait_for_streaming(TestCluster& source, const std::string& slot_name, std::chrono::milliseconds timeout,
                        DaemonProcess* daemon)
{
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        auto res = source.exec_params("SELECT active FROM pg_replication_slots WHERE slot_name = $1", {slot_name});
        if (res.rows() == 1 && res.get(0, 0) == "t")
            return true;
        if (Clock::now() >= deadline) {
            std::cerr << "[harness] slot " << slot_name << " not active after " << timeout.count() << " ms\n";
            return false;
        }
        if (daemon && !daemon->running()) {
            std::cerr << "[harness] the daemon exited before slot " << slot_name << " became active\n";
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

void exec_on_both(TestCluster& source, TestCluster& target, const std::string& sql)
{
    source.exec(sql);
    target.exec(sql);
}

void exec_statements(TestCluster& cluster, const std::string& script)
{
    std::string statement;
    std::size_t pos = 0;
    auto flush = [&] {
        if (statement.find_first_not_of(" \t\r\n") != std::string::npos)
            cluster.exec(statement);
        statement.clear();
    };
    while (pos < script.size()) {
        std::size_t eol = script.find('\n', pos);
        std::string line = script.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
        pos = eol == std::string::npos ? script.size() : eol + 1;
        statement += line;
        statement += '\n';
        auto last = line.find_last_not_of(" \t\r");
        if (last != std::string::npos && line[last] == ';')
            flush();
    }
    flush();
}

std::string join_lines(const std::vector<std::string>& lines)
{
    std::string out;
    for (const auto& l : lines) {
        if (!out.empty())
            out += '\n';
        out += l;
    }
    return out;
}

} // namespace pgshift::test
