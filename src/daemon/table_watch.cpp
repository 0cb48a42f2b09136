// TableWatch: new source tables join the replication with their rows, or are reported loudly.
#include "pgshift/daemon/table_watch.hpp"

#include "pgshift/copy/schema_copy.hpp"
#include "pgshift/copy/table_copy.hpp"
#include "pgshift/daemon/state.hpp"

#include <spdlog/spdlog.h>

namespace pgshift::daemon {

namespace {

constexpr auto k_repeat_report = std::chrono::seconds(60);

/// Rolls back whatever transaction `conn` is in; a broken connection is left to the caller.
void rollback_quietly(pg::Connection* conn)
{
    try {
        if (conn && conn->is_ok())
            conn->exec("ROLLBACK");
    } catch (const std::exception&) {
    }
}

} // namespace

pg::Connection& TableWatch::target()
{
    if (!target_ || !target_->is_ok()) {
        target_ = std::make_unique<pg::Connection>(pg::conninfo_with(
            cfg_.target.conninfo, {{"application_name", "pgshift_" + cfg_.name + "_tables"},
                                   {"client_encoding", "UTF8"},
                                   {"options", std::string(pg::k_no_timeouts) + " " + pg::k_writable + " " +
                                                   pg::k_all_rows}}));
        pg::no_version_timeouts(*target_);
    }
    return *target_;
}

void TableWatch::poll(pg::Connection& source)
{
    auto tables = reader::select_tables(source, cfg_.tables);
    auto published = reader::published_tables(source, cfg_.publication_name());
    std::vector<std::string> problems;
    for (const auto& t : tables) {
        const bool stale = unpublished_.count(t.display()) > 0;
        const std::string stale_note =
            stale ? " (pgshift removed it from the publication when it lost its replica identity: its target copy "
                    "stopped following it and is copied anew when it joins again, into an emptied target table)"
                  : "";
        if (published.count(t.display())) {
            if (t.refuses_writes)
                problems.push_back(unpublish(source, t));
            else if (!t.identity_problem.empty())
                problems.push_back(t.identity_problem + " (it is in the publication already)");
            continue;
        }
        if (!t.identity_problem.empty()) {
            problems.push_back(t.identity_problem + "; it is not replicated until then" + stale_note);
            continue;
        }
        if (auto why = join(source, t); !why.empty())
            problems.push_back("table " + t.display() + " is not replicated: " + why + stale_note);
        else
            unpublished_.erase(t.display());
    }
    auto now = std::chrono::steady_clock::now();
    if (problems != reported_ || (!problems.empty() && now - last_report_ > k_repeat_report)) {
        for (const auto& p : problems)
            spdlog::error("{}", p);
        if (problems.empty() && !reported_.empty())
            spdlog::info("every selected source table is replicated again");
        reported_ = problems;
        last_report_ = now;
    }
    state_.set_unreplicated_tables(problems);
}

std::string TableWatch::unpublish(pg::Connection& source, const reader::SourceTable& table)
{
    const auto name = table.display();
    try {
        source.exec("BEGIN");
        // Short: the ALTER waits for the table's open writers, and the application's next
        // writers would queue behind it.
        source.exec("SET LOCAL lock_timeout = '2s'");
        source.exec("ALTER PUBLICATION " + pg::quote_ident(cfg_.publication_name()) + " DROP TABLE " + table.sql());
        source.exec("COMMIT");
    } catch (const pg::PgError& e) {
        rollback_quietly(&source);
        if (e.broken())
            throw;
        return table.identity_problem + " (it is in the publication, so the source refuses the application's "
                                        "UPDATE and DELETE on it; removing it from the publication failed, retrying: " +
               e.what() + ")";
    }
    unpublished_.insert(name);
    spdlog::error("table {} lost its replica identity while published, so the source refused the application's "
                  "UPDATE and DELETE on it: removed it from publication {}; it is not replicated until its identity "
                  "is back and its target table is emptied (then it is copied anew)",
                  name, cfg_.publication_name());
    return table.identity_problem + "; pgshift removed it from the publication so that the source accepts the "
                                    "application's UPDATE and DELETE again, and it is not replicated until then";
}

std::string TableWatch::join(pg::Connection& source, const reader::SourceTable& table)
{
    const auto name = table.display();
    const auto sql = table.sql();
    pg::Connection* dst = nullptr;
    bool source_open = false;
    try {
        dst = &target();
        if (dst->exec_params("SELECT to_regclass($1) IS NULL", {sql}).get(0, 0) == "t") {
            if (!creates_tables())
                return "it exists on the source but not on the target; create it on the target and pgshift copies "
                       "its rows and replicates it";
            // schema: copy (with the initial copy): created from the source's definition, with
            // its indexes at once (a new table is usually small, and apply needs its keys).
            copy::SchemaCopy schema(cfg_);
            schema.before_data(source, *dst, {table});
            schema.after_data(source, *dst, {table});
            spdlog::info("table {} appeared on the source: created it on the target (schema: copy)", name);
        }
        dst->exec("BEGIN");
        dst->exec("SET LOCAL session_replication_role = replica");
        if (partial_.count(name)) {
            dst->exec("TRUNCATE " + sql);
        } else if (dst->exec("SELECT EXISTS (SELECT 1 FROM " + sql + ")").get(0, 0) == "t") {
            rollback_quietly(dst);
            return "the target table already holds rows; pgshift copies a new table only into an empty one "
                   "(empty it on the target, or add it to tables.exclude)";
        }
        source.exec("BEGIN");
        source_open = true;
        source.exec("SET LOCAL lock_timeout = '2s'");
        // The copy may outlast the application's timeouts and must see every row
        // (pg::k_no_timeouts, pg::k_all_rows; this connection sends no options).
        source.exec("SELECT set_config('statement_timeout', '0', true), "
                    "set_config('idle_in_transaction_session_timeout', '0', true), "
                    "set_config('row_security', 'off', true)");
        source.exec("LOCK TABLE " + sql + " IN EXCLUSIVE MODE");
        source.exec("ALTER PUBLICATION " + pg::quote_ident(cfg_.publication_name()) + " ADD TABLE " + sql);
        auto stats = copy::copy_table(source, *dst, sql, copy::plan_copy(source, *dst, sql));
        partial_.insert(name);
        dst->exec("COMMIT");
        source.exec("COMMIT");
        source_open = false;
        partial_.erase(name);
        state_.add_copied(stats.rows, stats.bytes);
        spdlog::info("table {} appeared on the source and now replicates: joined publication {} with {} existing "
                     "row(s) copied",
                     name, cfg_.publication_name(), stats.rows);
        return "";
    } catch (const std::exception& e) {
        if (source_open)
            rollback_quietly(&source);
        // A failed COPY leaves the target connection mid-protocol: start over with a new one.
        target_.reset();
        state_.count_copy_error();
        const auto* pe = dynamic_cast<const pg::PgError*>(&e);
        if (pe && pe->sqlstate() == "55P03")
            return "a transaction on the source holds a lock on it; pgshift tries again in a few seconds";
        return std::string("joining it failed, retrying: ") + e.what();
    }
}

} // namespace pgshift::daemon
