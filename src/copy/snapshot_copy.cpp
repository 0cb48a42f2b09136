// The initial copy's sessions: snapshot import, unit planning (page ranges), COPY relay.
#include "pgshift/copy/snapshot_copy.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

namespace pgshift::copy {

namespace {

/// Thrown from a tick when the copy was asked to stop; not an error.
struct Stopped {};

/// Smallest and largest range, in 8 KiB pages (16 MiB and 1 GiB of heap).
constexpr std::uint64_t k_min_range_pages = 2048;
constexpr std::uint64_t k_max_range_pages = 131072;
/// Ranges per session that a large copy aims for, so sessions finish close together.
constexpr std::uint64_t k_ranges_per_session = 4;

/// Session settings shared by both sides: values travel as text, so both sides must print and
/// parse them the same way (as apply's sessions do, correctness rule 8); and pg::k_no_timeouts
/// and pg::k_all_rows.
const std::string k_text_settings =
    std::string("-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c timezone=UTC ") +
    pg::k_no_timeouts + " " + pg::k_all_rows;

} // namespace

std::vector<PageRange> split_pages(std::uint64_t pages, std::uint64_t range_pages)
{
    range_pages = std::max<std::uint64_t>(range_pages, 1);
    const std::uint64_t longest = range_pages + range_pages / 2;
    if (pages < longest)
        return {{0, 0}};
    std::vector<PageRange> out;
    for (std::uint64_t first = 0;; first += range_pages) {
        if (first + longest > pages) {
            out.push_back({first, 0});
            return out;
        }
        out.push_back({first, first + range_pages});
    }
}

bool should_split(config::SplitTables mode, std::uint64_t sessions, int source_version, int target_version)
{
    // TID range scans exist from PostgreSQL 14; older sources copy each relation whole.
    if (sessions < 2 || source_version < 140000 || mode == config::SplitTables::never)
        return false;
    // Before PostgreSQL 16 a table grows one page at a time under its extension lock, so
    // sessions loading one table queue there: measured on 2 cores with a PostgreSQL 15 target,
    // pgbench scale 50 copied in 6.4 s split into 19 ranges over 4 sessions, 5.8 s whole (and
    // frozen, which a split table cannot be). PostgreSQL 16 extends by many pages at once.
    return mode == config::SplitTables::always || target_version >= 160000;
}

const char* TableProgress::state() const
{
    int total = units_total.load(), done = units_done.load();
    if (done >= total)
        return "done";
    return units_started.load() > 0 ? "copying" : "pending";
}

CopyProgress::Totals CopyProgress::totals() const
{
    Totals t;
    auto ended = elapsed_ms.load();
    t.seconds = ended >= 0 ? static_cast<double>(ended) / 1000
                           : std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    t.rows = rows.load();
    t.bytes = bytes.load();
    if (!planned.load(std::memory_order_acquire))
        return t;
    for (const auto& p : tables) {
        ++t.tables;
        std::string_view st = p->state();
        if (st == "done")
            ++t.done;
        else if (st == "copying")
            ++t.copying;
        t.pages += p->pages;
        t.pages_done += std::min(p->pages_done.load(), p->pages);
    }
    return t;
}

SnapshotCopy::SnapshotCopy(const config::Config& cfg, std::vector<CopyTable> tables, std::string snapshot,
                           std::shared_ptr<CopyProgress> progress, CopyTick on_copied)
    : cfg_(cfg), tables_(std::move(tables)), snapshot_(std::move(snapshot)), progress_(std::move(progress)),
      on_copied_(std::move(on_copied))
{
}

SnapshotCopy::~SnapshotCopy()
{
    stop();
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
    for (void* c : cancels_)
        PQfreeCancel(static_cast<PGcancel*>(c));
}

void SnapshotCopy::register_cancel(pg::Connection& conn)
{
    if (auto* c = PQgetCancel(conn.raw())) {
        std::lock_guard lk(mutex_);
        cancels_.push_back(c);
    }
}

void SnapshotCopy::stop()
{
    stop_.store(true);
    if (running_.load() == 0 || cancelled_.exchange(true))
        return;
    // The sessions' connections outlive this call (they close only when their thread ends,
    // after join); a cancel for a statement that already ended does nothing.
    std::lock_guard lk(mutex_);
    for (void* c : cancels_) {
        char err[256];
        (void)PQcancel(static_cast<PGcancel*>(c), err, sizeof err);
    }
}

void SnapshotCopy::plan()
{
    const std::string app = "pgshift_" + cfg_.name + "_copy_plan";
    pg::Connection source(pg::conninfo_with(cfg_.source.conninfo, {{"application_name", app}}));
    pg::Connection target(pg::conninfo_with(cfg_.target.conninfo, {{"application_name", app}}));
    std::vector<std::string> names;
    for (const auto& t : tables_)
        names.push_back(t.sql);
    // Every relation that holds rows of each selected table (itself, or its leaf partitions),
    // with its heap size in pages now; the last range of each is open-ended anyway.
    auto r = source.exec_params(
        "SELECT t.ord, quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "       pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.oid <> t.name::regclass "
        "FROM unnest($1::text[]) WITH ORDINALITY AS t(name, ord) "
        "CROSS JOIN LATERAL (SELECT t.name::regclass::oid AS relid "
        "                    UNION SELECT relid FROM pg_partition_tree(t.name::regclass)) p "
        "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' ORDER BY t.ord, 2",
        {pg::text_array(names)});
    struct Leaf {
        std::string sql;
        std::uint64_t pages;
        bool partition;
    };
    std::vector<std::vector<Leaf>> leaves(tables_.size());
    std::uint64_t total_pages = 0;
    for (int i = 0; i < r.rows(); ++i) {
        auto ord = std::stoul(r.str(i, 0));
        if (ord < 1 || ord > tables_.size())
            throw InternalError("copy planning: row for table " + std::to_string(ord));
        auto pages = std::stoull(r.str(i, 2));
        leaves[ord - 1].push_back({r.str(i, 1), pages, r.get(i, 3) == "t"});
        total_pages += pages;
    }
    // Largest tables first: their ranges are handed out first, small tables fill the end.
    std::vector<std::size_t> order(tables_.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    auto pages_of = [&](std::size_t i) {
        std::uint64_t p = 0;
        for (const auto& l : leaves[i])
            p += l.pages;
        return p;
    };
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return pages_of(a) > pages_of(b); });

    const auto sessions = static_cast<std::uint64_t>(std::max(1, cfg_.initial_copy.workers));
    const auto range_pages =
        std::clamp<std::uint64_t>(total_pages / (sessions * k_ranges_per_session), k_min_range_pages, k_max_range_pages);
    const bool can_split = should_split(cfg_.initial_copy.split_tables, sessions, source.server_version(),
                                        target.server_version());
    for (auto i : order) {
        auto p = std::make_unique<TableProgress>();
        p->display = tables_[i].display;
        p->sql = tables_[i].sql;
        p->pages = pages_of(i);
        formats_.push_back(plan_copy(source, target, tables_[i].sql));
        if (formats_.back().columns.empty())
            throw SourceError("table " + tables_[i].display + " has no column the copy could carry", false);
        for (const auto& leaf : leaves[i]) {
            auto ranges = can_split ? split_pages(leaf.pages, range_pages) : std::vector<PageRange>{{0, 0}};
            for (const auto& r : ranges) {
                bool whole = ranges.size() == 1;
                // A table copied in one unit is emptied (it is, or an interrupted copy's rows
                // were removed at start) in the unit's transaction, so it can be loaded frozen.
                bool freeze = whole && !leaf.partition && formats_.back().can_freeze;
                units_.push_back({p.get(), leaf.sql, leaf.partition, r.first, r.end, whole,
                                  (r.end ? r.end : std::max(leaf.pages, r.first)) - r.first, freeze});
            }
        }
        progress_->tables.push_back(std::move(p));
    }
    // Unit counts per table, once every unit is known (a table is done when all committed).
    for (const auto& u : units_)
        u.table->units_total.fetch_add(1);
    auto binary = std::count_if(formats_.begin(), formats_.end(), [](const auto& f) { return f.binary; });
    auto frozen = std::count_if(units_.begin(), units_.end(), [](const auto& u) { return u.freeze; });
    reported_.assign(progress_->tables.size(), false);
    progress_->planned.store(true, std::memory_order_release);
    spdlog::info("initial copy: {} table(s), {} unit(s) {}, {} page(s) ({} MiB) in all, {} session(s); "
                 "{} table(s) in binary format, {} loaded frozen",
                 tables_.size(), units_.size(),
                 can_split ? "of at most " + std::to_string(range_pages * 8 / 1024) + " MiB"
                           : std::string("(each table or partition whole)"),
                 total_pages, total_pages * 8 / 1024, sessions, binary, frozen);
}

void SnapshotCopy::start()
{
    if (tables_.empty()) { // e.g. a resumed copy whose every table was done: no session needed
        reported_.clear();
        progress_->planned.store(true, std::memory_order_release);
        started_ = true;
        return;
    }
    try {
        plan();
    } catch (const pg::PgError& e) {
        throw SourceError(std::string("planning the initial copy failed: ") + e.what(), e.retryable());
    }
    started_ = true;
    const int sessions = std::max(1, cfg_.initial_copy.workers);
    running_.store(sessions);
    for (int k = 0; k < sessions; ++k)
        threads_.emplace_back([this, k] { session_main(k); });
}

bool SnapshotCopy::imported() const
{
    return tables_.empty() || progress_->sessions_imported.load() >= std::max(1, cfg_.initial_copy.workers);
}

SnapshotCopy::Unit* SnapshotCopy::next_unit()
{
    auto i = next_.fetch_add(1);
    return i < units_.size() ? &units_[i] : nullptr;
}

void SnapshotCopy::session_main(int k)
{
    const std::string app = "pgshift_" + cfg_.name + "_copy" + std::to_string(k);
    bool on_source = true;
    try {
        progress_->sessions.fetch_add(1);
        pg::Connection source(pg::conninfo_with(
            cfg_.source.conninfo,
            {{"application_name", app},
             {"client_encoding", "UTF8"},
             {"options", k_text_settings}}));
        source.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        try {
            source.exec("SET TRANSACTION SNAPSHOT " + pg::quote_literal(snapshot_));
        } catch (const pg::PgError& e) {
            throw SourceError("copy session " + std::to_string(k) + " could not import the slot's snapshot " +
                                  snapshot_ + " (the session that exported it is gone?): " + e.what(),
                              true);
        }
        register_cancel(source);
        progress_->sessions_imported.fetch_add(1);
        on_source = false;
        pg::Connection target(pg::conninfo_with(
            cfg_.target.conninfo,
            {{"application_name", app},
             {"client_encoding", "UTF8"},
             {"options", k_text_settings + " -c session_replication_role=replica -c synchronous_commit=off " +
                             pg::k_writable}}));
        register_cancel(target);
        auto tick = [&](std::uint64_t rows, std::uint64_t bytes, TableProgress& t) {
            t.rows.fetch_add(rows, std::memory_order_relaxed);
            t.bytes.fetch_add(bytes, std::memory_order_relaxed);
            progress_->rows.fetch_add(rows, std::memory_order_relaxed);
            progress_->bytes.fetch_add(bytes, std::memory_order_relaxed);
            if (on_copied_)
                on_copied_(rows, bytes);
            if (stop_.load(std::memory_order_relaxed))
                throw Stopped{};
        };
        while (!stop_.load()) {
            Unit* u = next_unit();
            if (!u)
                break;
            auto& t = *u->table;
            t.units_started.fetch_add(1);
            auto index = static_cast<std::size_t>(
                std::find_if(progress_->tables.begin(), progress_->tables.end(),
                             [&](const auto& p) { return p.get() == &t; }) -
                progress_->tables.begin());
            const auto& format = formats_.at(index);
            std::string select = "SELECT " + format.columns + " FROM ONLY " + u->relation;
            if (!u->whole) {
                select += " WHERE ctid >= '(" + std::to_string(u->first_page) + ",0)'::tid";
                if (u->end_page)
                    select += " AND ctid < '(" + std::to_string(u->end_page) + ",0)'::tid";
            }
            std::string label = t.display;
            if (u->partition)
                label += " (partition " + u->relation + ")";
            if (!u->whole)
                label += " pages " + std::to_string(u->first_page) + ".." +
                         (u->end_page ? std::to_string(u->end_page) : std::string("end"));
            spdlog::debug("copy session {}: {}", k, label);
            target.exec("BEGIN");
            if (u->freeze)
                target.exec("TRUNCATE ONLY " + t.sql);
            copy_rows(source, target, "COPY (" + select + ") TO STDOUT" + copy_options(format, false),
                      "COPY " + t.sql + " (" + format.columns + ") FROM STDIN" + copy_options(format, u->freeze),
                      format.binary, label, [&](std::uint64_t rows, std::uint64_t bytes) { tick(rows, bytes, t); });
            target.exec("COMMIT");
            t.pages_done.fetch_add(u->pages);
            t.units_done.fetch_add(1);
        }
        if (!stop_.load())
            source.exec("COMMIT");
    } catch (const Stopped&) {
        // stop() was called: the connections close with their transactions rolled back.
    } catch (...) {
        // After stop() a cancelled statement is the stop, not an error.
        if (!cancelled_.load()) {
            auto ep = std::current_exception();
            try {
                std::rethrow_exception(ep);
            } catch (const pg::PgError& e) {
                auto what = "copy session " + std::to_string(k) + (on_source ? " (source): " : ": ") + e.what();
                ep = on_source ? std::make_exception_ptr(SourceError(what, e.retryable()))
                               : std::make_exception_ptr(TargetError(what, e.retryable()));
            } catch (...) {
            }
            std::lock_guard lk(mutex_);
            if (!error_)
                error_ = ep;
            failed_.store(true);
            stop_.store(true);
        }
    }
    running_.fetch_sub(1);
}

void SnapshotCopy::join()
{
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
    progress_->elapsed_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - progress_->started)
                                    .count());
    std::lock_guard lk(mutex_);
    if (error_)
        std::rethrow_exception(error_);
}

std::vector<const TableProgress*> SnapshotCopy::take_finished_tables()
{
    std::vector<const TableProgress*> out;
    if (!progress_->planned.load(std::memory_order_acquire))
        return out;
    std::lock_guard lk(mutex_);
    for (std::size_t i = 0; i < progress_->tables.size(); ++i) {
        const auto& t = *progress_->tables[i];
        if (!reported_[i] && t.units_done.load() >= t.units_total.load()) {
            reported_[i] = true;
            out.push_back(&t);
        }
    }
    return out;
}

} // namespace pgshift::copy
