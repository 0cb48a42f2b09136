// Verify: source and target compared at one common LSN (see runner.hpp).
#include "pgshift/verify/runner.hpp"

#include "pgshift/common/clock.hpp"

#include "pgshift/common/errors.hpp"
#include "pgshift/common/lsn.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/verify/common_point.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <optional>

namespace pgshift::verify {

namespace {

using namespace std::chrono_literals;

/// Identical text renderings on both sides; every name qualified (search_path pg_catalog); a
/// large table's checksum may take minutes (pg::k_no_timeouts); every row counts (pg::k_all_rows).
const std::string k_session_options = std::string("-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
                                                  "-c TimeZone=UTC -c bytea_output=hex -c search_path=pg_catalog ") +
                                      pg::k_no_timeouts + " " + pg::k_all_rows;
constexpr std::size_t k_max_pairs = 4;
constexpr auto k_hold_timeout = 60s;
constexpr std::uint64_t k_list_rows = 200; ///< a differing range this small is listed key by key
constexpr std::size_t k_max_keys = 100;

struct TableDef {
    std::string name;        ///< schema.table, as reported
    std::string from;        ///< FROM item: [ONLY] "schema"."table"
    std::string row_text;    ///< ROW(t."c1", ...)::text, columns in source order
    std::vector<std::string> key;       ///< t."k1", ... (empty: compared as a whole)
    std::vector<std::string> key_types; ///< for the casts of range bounds
    double size = 0;
};

/// A range of keys: (lo, hi]; an empty bound is open.
struct Range {
    std::vector<std::string> lo, hi;
};

struct Digest {
    std::uint64_t rows = 0;
    std::string sum;
    bool operator==(const Digest&) const = default;
};

std::string show_key(const std::vector<std::string>& k)
{
    if (k.empty())
        return "";
    std::string s = "(";
    for (std::size_t i = 0; i < k.size(); ++i)
        s += (i ? "," : "") + k[i];
    return s + ")";
}

std::string show_range(const Range& r)
{
    return "(" + (r.lo.empty() ? std::string("-inf") : show_key(r.lo)) + ", " +
           (r.hi.empty() ? std::string("+inf") : show_key(r.hi)) + "]";
}

/// The WHERE clause of a range and its parameters.
std::string range_predicate(const TableDef& d, const Range& r, std::vector<std::optional<std::string>>& params)
{
    auto row_of = [&](const std::vector<std::string>& v) {
        std::string s = "ROW(";
        for (std::size_t i = 0; i < v.size(); ++i) {
            params.emplace_back(v[i]);
            s += (i ? ", $" : "$") + std::to_string(params.size()) + "::" + d.key_types[i];
        }
        return s + ")";
    };
    std::string key = "ROW(";
    for (std::size_t i = 0; i < d.key.size(); ++i)
        key += (i ? ", " : "") + d.key[i];
    key += ")";
    std::string w = "TRUE";
    if (!r.lo.empty())
        w += " AND " + key + " > " + row_of(r.lo);
    if (!r.hi.empty())
        w += " AND " + key + " <= " + row_of(r.hi);
    return w;
}

/// One pair of comparison sessions: source (in the exported snapshot), target (snapshot taken
/// at the hold point).
struct Pair {
    std::unique_ptr<pg::Connection> source, target;
};

class TableComparer {
public:
    TableComparer(Pair& p, const TableDef& d, bool checksums, control::VerifyReport::Table& out,
                  std::atomic<std::uint64_t>& rows)
        : p_(p), d_(d), checksums_(checksums), out_(out), rows_(rows)
    {
    }

    void run()
    {
        Range all;
        auto s = digest(*p_.source, all);
        auto t = digest(*p_.target, all);
        out_.source_rows = s.rows;
        out_.target_rows = t.rows;
        rows_.fetch_add(s.rows + t.rows, std::memory_order_relaxed);
        if (s == t) {
            out_.result = "match";
            return;
        }
        out_.result = "mismatch";
        if (d_.key.empty())
            return; // no key: the counts and digests are the report
        narrow(all, s, t);
    }

private:
    Digest digest(pg::Connection& c, const Range& r)
    {
        std::vector<std::optional<std::string>> params;
        auto where = range_predicate(d_, r, params);
        auto sum = checksums_ ? "coalesce(sum(hashtextextended(" + d_.row_text + ", 0)::numeric), 0)::text" : "'0'";
        auto res = c.exec_params("SELECT count(*), " + sum + " FROM " + d_.from + " t WHERE " + where, params);
        return {std::stoull(res.str(0, 0)), res.str(0, 1)};
    }

    /// The key at offset `n` of range `r` on `c` (the split point of a bisection).
    std::vector<std::string> key_at(pg::Connection& c, const Range& r, std::uint64_t n)
    {
        std::vector<std::optional<std::string>> params;
        auto where = range_predicate(d_, r, params);
        std::string cols, order;
        for (std::size_t i = 0; i < d_.key.size(); ++i) {
            cols += (i ? ", " : "") + d_.key[i] + "::text";
            order += (i ? ", " : "") + d_.key[i];
        }
        auto res = c.exec_params("SELECT " + cols + " FROM " + d_.from + " t WHERE " + where + " ORDER BY " + order +
                                     " OFFSET " + std::to_string(n) + " LIMIT 1",
                                 params);
        std::vector<std::string> k;
        for (int i = 0; i < res.columns() && res.rows() == 1; ++i)
            k.push_back(res.str(0, i));
        return k;
    }

    std::map<std::string, std::string> list(pg::Connection& c, const Range& r)
    {
        std::vector<std::optional<std::string>> params;
        auto where = range_predicate(d_, r, params);
        std::string key = "ROW(";
        for (std::size_t i = 0; i < d_.key.size(); ++i)
            key += (i ? ", " : "") + d_.key[i];
        key += ")::text";
        auto res = c.exec_params("SELECT " + key + ", hashtextextended(" + d_.row_text + ", 0) FROM " + d_.from +
                                     " t WHERE " + where,
                                 params);
        std::map<std::string, std::string> m;
        for (int i = 0; i < res.rows(); ++i)
            m.emplace(res.str(i, 0), res.str(i, 1));
        return m;
    }

    void add_key(std::string key, const char* kind)
    {
        if (out_.keys.size() >= k_max_keys) {
            out_.keys_truncated = true;
            return;
        }
        out_.keys.push_back({std::move(key), kind});
    }

    /// Bisects a differing range down to ranges small enough to list.
    void narrow(const Range& r, const Digest& s, const Digest& t)
    {
        if (std::max(s.rows, t.rows) <= k_list_rows || out_.keys_truncated) {
            if (out_.keys_truncated) {
                out_.ranges.push_back(show_range(r));
                return;
            }
            auto a = list(*p_.source, r);
            auto b = list(*p_.target, r);
            bool any = false;
            for (const auto& [k, h] : a) {
                auto it = b.find(k);
                if (it == b.end())
                    add_key(k, "missing_on_target");
                else if (it->second != h)
                    add_key(k, "different");
                else
                    continue;
                any = true;
            }
            for (const auto& [k, h] : b)
                if (!a.count(k)) {
                    add_key(k, "extra_on_target");
                    any = true;
                }
            if (any || a.size() != b.size())
                out_.ranges.push_back(show_range(r));
            return;
        }
        auto mid = s.rows > 0 ? key_at(*p_.source, r, s.rows / 2) : key_at(*p_.target, r, t.rows / 2);
        if (mid.empty()) {
            out_.ranges.push_back(show_range(r));
            return;
        }
        Range left{r.lo, mid}, right{mid, r.hi};
        for (const auto& half : {left, right}) {
            auto hs = digest(*p_.source, half);
            auto ht = digest(*p_.target, half);
            if (!(hs == ht))
                narrow(half, hs, ht);
        }
    }

    Pair& p_;
    const TableDef& d_;
    bool checksums_;
    control::VerifyReport::Table& out_;
    std::atomic<std::uint64_t>& rows_;
};

std::unique_ptr<pg::Connection> open_session(const std::string& conninfo, const std::string& app)
{
    auto c = std::make_unique<pg::Connection>(
        pg::conninfo_with(conninfo, {{"application_name", app}, {"options", k_session_options}, {"client_encoding", "UTF8"}}));
    pg::no_version_timeouts(*c);
    return c;
}

/// The published tables, their columns in source order and their key, read in the snapshot.
std::vector<TableDef> read_tables(pg::Connection& c, const std::string& publication)
{
    auto r = c.exec_params(
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname || '.' || c.relname, "
        "       c.relkind, greatest(c.reltuples, 0) "
        "FROM pg_publication_tables pt "
        "JOIN pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        "WHERE pt.pubname = $1 ORDER BY 5 DESC, 3",
        {publication});
    std::vector<TableDef> out;
    for (int i = 0; i < r.rows(); ++i) {
        TableDef d;
        d.name = r.str(i, 2);
        d.from = (r.get(i, 3) == "p" ? "" : "ONLY ") + r.str(i, 1);
        d.size = std::stod(r.str(i, 4));
        auto cols = c.exec_params("SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 "
                                  "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                                  {r.str(i, 0)});
        d.row_text = "ROW(";
        for (int j = 0; j < cols.rows(); ++j)
            d.row_text += (j ? ", t." : "t.") + cols.str(j, 0);
        d.row_text += ")::text";
        // The primary key, else the replica identity index.
        auto key = c.exec_params(
            "SELECT quote_ident(a.attname), format_type(a.atttypid, NULL) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indexrelid = (SELECT indexrelid FROM pg_index WHERE indrelid = $1 AND (indisprimary OR "
            "indisreplident) ORDER BY indisprimary DESC LIMIT 1) ORDER BY k.ord",
            {r.str(i, 0)});
        for (int j = 0; j < key.rows(); ++j) {
            d.key.push_back("t." + key.str(j, 0));
            d.key_types.push_back(key.str(j, 1));
        }
        out.push_back(std::move(d));
    }
    return out;
}

} // namespace

Runner::Runner(const config::Config& cfg, apply::Hold& hold, std::function<std::uint64_t()> applied)
    : cfg_(cfg), hold_(hold), applied_(std::move(applied))
{
}

Runner::~Runner()
{
    stop_.store(true);
    wait();
}

void Runner::wait()
{
    if (thread_.joinable())
        thread_.join();
}

void Runner::cancel()
{
    stop_.store(true);
    wait();
    stop_.store(false);
}

bool Runner::start(bool checksums)
{
    if (running_.exchange(true))
        return false;
    if (thread_.joinable())
        thread_.join();
    // Numbered across runners (each direction has one), so that ids stay unique in the log.
    static std::atomic<std::uint64_t> all_runs{0};
    runs_ = ++all_runs;
    const auto applied = applied_(); // before the lock: it reads the daemon's status, which reads ours
    {
        std::lock_guard lk(mutex_);
        report_ = {};
        report_.id = "verify-" + std::to_string(runs_);
        report_.state = "holding";
        report_.checksums = checksums;
        report_.started_at = now_rfc3339();
        report_.applied_at_start = Lsn(applied).str();
    }
    thread_ = std::thread([this, checksums] { run(checksums); });
    return true;
}

control::VerifyReport Runner::report() const
{
    std::lock_guard lk(mutex_);
    return report_;
}

void Runner::set(const std::function<void(control::VerifyReport&)>& change)
{
    std::lock_guard lk(mutex_);
    change(report_);
}

void Runner::run(bool checksums)
{
    auto t0 = std::chrono::steady_clock::now();
    const std::string app = "pgshift_" + cfg_.name + "_verify";
    std::string step = "exporting a source snapshot";
    std::atomic<std::uint64_t> rows{0};
    try {
        // 1. A snapshot of the source at a known LSN X, apply held before it (common_point.hpp).
        CommonPoint point(cfg_.source.conninfo, app, "pgshift_" + cfg_.name + "_verify_" + std::to_string(runs_),
                          hold_, std::unique_lock(hold_.owner));
        const Lsn at = point.at();
        set([&](auto& r) { r.lsn = at.str(); });

        // 2. Source sessions import it (while the exporting session stays idle).
        step = "importing the snapshot on the source";
        std::vector<Pair> pairs(1);
        auto import = [&](Pair& p) {
            p.source = open_session(cfg_.source.conninfo, app);
            point.import(*p.source);
        };
        import(pairs[0]);
        auto tables = read_tables(*pairs[0].source, cfg_.publication_name());
        pairs.resize(std::clamp<std::size_t>(tables.size(), 1, k_max_pairs));
        for (std::size_t k = 1; k < pairs.size(); ++k)
            import(pairs[k]);
        point.end_export();
        set([&](auto& r) {
            for (const auto& d : tables)
            {
                control::VerifyReport::Table t;
                t.table = d.name;
                t.keyed = !d.key.empty();
                r.tables.push_back(std::move(t));
            }
        });

        // 3. Apply everything before the point, hold, take the target's snapshots, release.
        step = "holding apply at " + at.str();
        point.reach(stop_, k_hold_timeout, "stopped (the daemon is stopping, or the cutover that started it gave up)");
        step = "taking the target's snapshots";
        for (auto& p : pairs) {
            p.target = open_session(cfg_.target.conninfo, app);
            p.target->exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            p.target->exec("SELECT 1"); // the snapshot is taken by the first query
        }
        point.release();
        spdlog::info("verify: comparing {} table(s) at {} ({} s to reach it)", tables.size(), at.str(),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        set([&](auto& r) { r.state = "running"; });

        // 4. Tables in parallel, largest first.
        step = "comparing";
        std::atomic<std::size_t> next{0};
        auto worker = [&](Pair& p) {
            for (;;) {
                auto i = next.fetch_add(1);
                if (i >= tables.size() || stop_.load())
                    return;
                control::VerifyReport::Table out;
                out.table = tables[i].name;
                out.result = "running";
                out.keyed = !tables[i].key.empty();
                set([&](auto& r) { r.tables[i].result = "running"; });
                try {
                    TableComparer(p, tables[i], checksums, out, rows).run();
                } catch (const std::exception& e) {
                    out.result = "error";
                    out.error = e.what();
                }
                set([&](auto& r) {
                    r.tables[i] = out;
                    ++r.tables_done;
                    r.rows_compared = rows.load();
                    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                });
                if (out.result == "error") // the session may be unusable now
                    return;
            }
        };
        std::vector<std::thread> threads;
        for (auto& p : pairs)
            threads.emplace_back(worker, std::ref(p));
        for (auto& t : threads)
            t.join();
        if (stop_.load())
            throw std::runtime_error("stopped (the daemon is stopping, or the cutover that started it gave up)");
        set([&](auto& r) {
            bool error = false, mismatch = false;
            for (auto& t : r.tables) {
                if (t.result == "pending" || t.result == "running") { // its session failed earlier
                    t.result = "error";
                    t.error = "not compared: the session comparing it failed on another table";
                }
                error = error || t.result == "error";
                mismatch = mismatch || t.result == "mismatch";
            }
            r.state = error ? "error" : mismatch ? "mismatch" : "match";
        });
    } catch (const std::exception& e) {
        spdlog::warn("verify: {} failed: {}", step, e.what());
        set([&](auto& r) {
            r.state = "error";
            r.error = step + ": " + e.what();
        });
    }
    set([&](auto& r) {
        r.finished_at = now_rfc3339();
        r.rows_compared = rows.load();
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
    auto rep = report();
    spdlog::info("verify {}: {} ({} tables, {} rows compared in {:.1f} s)", rep.id, rep.state, rep.tables.size(),
                 rep.rows_compared, rep.seconds);
    running_.store(false);
}

} // namespace pgshift::verify
