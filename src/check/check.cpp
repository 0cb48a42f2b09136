// The preflight checks of `pgshift check`, one named step each, on read-only connections.
#include "pgshift/check/check.hpp"

#include "pgshift/apply/origins.hpp"

#include "pgshift/check/pooler.hpp"
#include "pgshift/check/schema.hpp"
#include "pgshift/pg/connection.hpp"
#include "pgshift/pg/replication.hpp"
#include "pgshift/queue/message_log.hpp"
#include "pgshift/queue/progress.hpp"
#include "pgshift/reader/catalog.hpp"
#include "pgshift/reader/reader.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>

namespace pgshift::check {

namespace {

/// Below this, max_slot_wal_keep_size lets a short stall invalidate the slot (MB, pg_settings' unit).
constexpr long k_min_wal_keep_mb = 1024;
/// Free space in the spill directory below which a warning is due (as `run` warns).
constexpr std::uint64_t k_spill_free_warning = std::uint64_t(1) << 30;
/// Names listed in one message before "and N more".
constexpr std::size_t k_list_max = 10;

/// "a, b, c and 4 more".
std::string join_some(const std::vector<std::string>& items)
{
    std::string out;
    for (std::size_t i = 0; i < items.size() && i < k_list_max; ++i)
        out += (i ? ", " : "") + items[i];
    if (items.size() > k_list_max)
        out += " and " + std::to_string(items.size() - k_list_max) + " more";
    return out;
}

std::string join_all(const std::vector<std::string>& items, const char* sep = ", ")
{
    std::string out;
    for (const auto& i : items)
        out += (out.empty() ? "" : sep) + i;
    return out;
}

/// "15.4" from server_version_num 150004 (10 and later); "9.6.24" before.
std::string version_text(int v)
{
    if (v >= 100000)
        return std::to_string(v / 10000) + "." + std::to_string(v % 10000);
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}
int major_of(int v) { return v >= 100000 ? v / 10000 : v / 100; }

/// An error's message on one line, without pg::Connection's "query failed: " and libpq's "ERROR:  ".
std::string short_error(const std::exception& e)
{
    std::string m = e.what();
    for (const char* prefix : {"query failed: ", "ERROR:  "})
        if (m.rfind(prefix, 0) == 0)
            m.erase(0, std::char_traits<char>::length(prefix));
    if (auto p = m.find("\nERROR:  "); p != std::string::npos)
        m.erase(p, 9);
    // libpq's messages span lines (and indent hints with a tab): one line, single spaces.
    std::string out;
    for (char c : m) {
        bool space = c == '\n' || c == '\t' || c == ' ';
        if (!space)
            out.push_back(c);
        else if (!out.empty() && out.back() != ' ')
            out.push_back(' ');
    }
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

class Checker {
public:
    Checker(const config::Config& cfg, const config::EnvLookup& env) : cfg_(cfg), env_(env) {}

    Report run()
    {
        check_local();
        check_pooler_ports(Side::source, cfg_.source.conninfo);
        check_pooler_ports(Side::target, cfg_.target.conninfo);
        source_ = connect(Side::source, cfg_.source.conninfo);
        target_ = connect(Side::target, cfg_.target.conninfo);

        // Each step gets the side's connection; `on` keeps the list readable.
        auto on = [this](Side side, const char* what, void (Checker::*check)(pg::Connection&)) {
            step(side, what, [&](pg::Connection& c) { (this->*check)(c); });
        };
        if (source_) {
            report_.source_version = version_text(source_->server_version());
            on(Side::source, "for a pooler", &Checker::check_source_pooler);
            on(Side::source, "wal_level", &Checker::check_wal_level);
            on(Side::source, "whether the source is a standby", &Checker::check_source_standby);
            on(Side::source, "max_slot_wal_keep_size", &Checker::check_wal_keep_size);
            on(Side::source, "the role's privileges", &Checker::check_source_role);
            on(Side::source, "the selected tables", &Checker::check_tables);
            if (tables_)
                on(Side::source, "ownership of the selected tables", &Checker::check_table_owners);
            on(Side::source, "the replication slot", &Checker::check_slot);
            on(Side::source, "free replication slots and WAL senders", &Checker::check_source_capacity);
            check_replication_connection();
        }
        if (target_) {
            report_.target_version = version_text(target_->server_version());
            on(Side::target, "for a pooler", &Checker::check_target_pooler);
            on(Side::target, "whether the target is a standby", &Checker::check_target_standby);
            on(Side::target, "the role's privileges", &Checker::check_target_role);
            on(Side::target, "free replication origins", &Checker::check_origin_capacity);
            on(Side::target, "the migration's replication origins", &Checker::read_origins);
            if (tables_)
                on(Side::target, "privileges on the target tables", &Checker::check_table_privileges);
        }
        if (source_ && target_) {
            check_versions();
            if (tables_)
                on(Side::target, "the target tables against the source", &Checker::check_schemas);
            check_leftovers();
        }
        return std::move(report_);
    }

private:
    void add(Severity sev, Side side, std::string code, std::string message)
    {
        report_.problems.push_back({sev, side, std::move(code), std::move(message)});
    }
    void error(Side side, std::string code, std::string message)
    {
        add(Severity::error, side, std::move(code), std::move(message));
    }
    void warning(Side side, std::string code, std::string message)
    {
        add(Severity::warning, side, std::move(code), std::move(message));
    }

    pg::Connection* conn(Side side) { return side == Side::source ? source_.get() : target_.get(); }

    /// Runs one check on `side`'s connection. A failure (a query the role may not run, the
    /// connection lost) becomes this check's problem; the other checks still run. Skipped when
    /// the side could not be reached (already reported) or was lost (reported once).
    template <class F>
    void step(Side side, const char* what, F&& f)
    {
        auto* c = conn(side);
        if (!c)
            return;
        if (!c->is_ok()) {
            if (!lost_[static_cast<int>(side)])
                error(side, "connection_lost", std::string("the connection was lost while checking ") + what +
                                                   "; the checks after it were skipped: run pgshift check again");
            lost_[static_cast<int>(side)] = true;
            return;
        }
        try {
            f(*c);
        } catch (const std::exception& e) {
            error(side, "check_failed", std::string("could not check ") + what + ": " + short_error(e) +
                                            " (the role may lack a privilege pgshift run needs too)");
        }
    }

    // --- Configuration and the local machine ---------------------------------------------

    /// What `run` refuses before it connects anywhere.
    void check_local()
    {
        auto dir = queue::spill_dir(cfg_.apply.spill_dir);
        try {
            auto free = queue::check_spill_dir(dir);
            if (free < k_spill_free_warning)
                warning(Side::config, "spill_dir",
                        "spill directory " + dir.string() + " has only " + std::to_string(free >> 20) +
                            " MiB free: a transaction larger than a quarter of apply.max_queue_bytes is written "
                            "there in full (set apply.spill_dir to a larger disk)");
        } catch (const SpillError& e) {
            error(Side::config, "spill_dir",
                  std::string("apply.spill_dir: the spill directory cannot be used: ") + e.what() +
                      " (create it, make it writable by pgshift's user, or point apply.spill_dir elsewhere)");
        }
        try {
            (void)config::read_token_file(cfg_.control.token_file);
        } catch (const ConfigError& e) {
            error(Side::config, "token_file", e.what());
        }
    }

    // --- Connections and poolers ---------------------------------------------------------

    void check_pooler_ports(Side side, const std::string& conninfo)
    {
        try {
            for (const auto& p : find_poolers(conninfo, env_)) {
                auto where = (p.host.empty() ? std::string("the local socket") : p.host) + ":" + p.port;
                error(side, "pooler", std::string(name(side)) + ".conninfo points at " + where + ": " + p.why);
            }
        } catch (const ConfigError& e) {
            error(side, "conninfo", std::string(name(side)) + ".conninfo: " + e.what());
        }
    }

    std::unique_ptr<pg::Connection> connect(Side side, const std::string& conninfo)
    {
        try {
            return std::make_unique<pg::Connection>(
                pg::conninfo_with(conninfo, {{"application_name", "pgshift_" + cfg_.name + "_check"}}));
        } catch (const std::exception& e) {
            error(side, "connect",
                  std::string("cannot connect to the ") + name(side) + " (" + short_error(e) + "): check " +
                      name(side) + ".conninfo, that the server runs and that pg_hba.conf admits this host and "
                      "user; the other " + name(side) + " checks were skipped");
            return nullptr;
        }
    }

    void check_source_pooler(pg::Connection& c) { check_pooler_in_between(Side::source, c); }
    void check_target_pooler(pg::Connection& c) { check_pooler_in_between(Side::target, c); }
    void check_source_standby(pg::Connection& c) { check_standby(Side::source, c); }
    void check_target_standby(pg::Connection& c) { check_standby(Side::target, c); }

    /// A pooler answers the startup itself and announces a backend pid of its own.
    void check_pooler_in_between(Side side, pg::Connection& c)
    {
        auto r = c.exec("SELECT pg_backend_pid()");
        if (r.str(0, 0) != std::to_string(PQbackendPID(c.raw())))
            warning(side, "pooler",
                    std::string(name(side)) + ".conninfo reaches the server through a connection pooler (the "
                        "backend pid it announced, " + std::to_string(PQbackendPID(c.raw())) + ", is not the "
                        "session's, " + r.str(0, 0) + "): pgshift needs one server session per connection "
                        "(replication, replication origins); connect directly, or make sure the pooler runs "
                        "this database in session mode and passes replication connections");
    }

    // --- Source ----------------------------------------------------------------------------

    void check_wal_level(pg::Connection& c)
    {
        try {
            reader::require_logical_wal(c);
        } catch (const SourceError& e) {
            replication_possible_ = false;
            error(Side::source, "wal_level",
                  std::string(e.what()) + ": ALTER SYSTEM SET wal_level = logical, then restart the source (on "
                                          "RDS/Aurora set rds.logical_replication = 1 in the parameter group; on "
                                          "Cloud SQL the flag cloudsql.logical_decoding = on)");
        }
    }

    void check_standby(Side side, pg::Connection& c)
    {
        if (c.exec("SELECT pg_is_in_recovery()").get(0, 0) != "t")
            return;
        if (side == Side::source)
            error(side, "standby", "the source is a standby (in recovery): the publication and the slot must be "
                                   "created on the primary; point source.conninfo at the primary");
        else
            error(side, "standby", "the target is a standby (in recovery) and cannot be written: point "
                                   "target.conninfo at the new primary");
    }

    void check_wal_keep_size(pg::Connection& c)
    {
        auto r = c.exec("SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'");
        // Before PostgreSQL 13 there is no limit at all: like -1.
        long mb = r.rows() == 0 ? -1 : std::stol(r.str(0, 0));
        if (mb < 0)
            warning(Side::source, "wal_keep_size",
                    "max_slot_wal_keep_size is -1 (unlimited): while pgshift is stopped or behind, the slot keeps "
                    "every WAL segment, and a stalled migration can fill the source's disk; set a limit the disk "
                    "can hold (ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf()) and "
                    "alert on pgshift's lag");
        else if (mb < k_min_wal_keep_mb)
            warning(Side::source, "wal_keep_size",
                    "max_slot_wal_keep_size is " + std::to_string(mb) + " MB: below 1 GB, a short stall (a "
                    "restart, a slow target) can make the source invalidate the slot, and the migration must "
                    "start over; raise it (ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf())");
    }

    void check_source_role(pg::Connection& c)
    {
        auto r = c.exec_params(
            "SELECT current_user, r.rolsuper, r.rolreplication, "
            "       EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' "
            "               AND pg_has_role(current_user, g.oid, 'MEMBER')), "
            "       has_database_privilege(current_database(), 'CREATE'), current_database(), "
            "       p.pubname IS NOT NULL, pg_has_role(p.pubowner, 'USAGE'), pg_get_userbyid(p.pubowner) "
            "FROM pg_roles r LEFT JOIN pg_publication p ON p.pubname = $1 "
            "WHERE r.rolname = current_user",
            {cfg_.publication_name()});
        if (r.rows() != 1)
            throw InternalError("the current role is not in pg_roles");
        auto user = r.str(0, 0);
        auto user_sql = pg::readable_ident(user);
        auto publication = cfg_.publication_name();
        bool superuser = r.get(0, 1) == "t";
        if (!superuser && r.get(0, 2) != "t" && r.get(0, 3) != "t") {
            replication_possible_ = false;
            error(Side::source, "replication_privilege",
                  "role " + user + " has neither the REPLICATION attribute nor superuser, so it cannot open the "
                  "replication connection that streams changes: ALTER ROLE " + user_sql + " REPLICATION (as a "
                  "superuser; on RDS/Aurora GRANT rds_replication TO " + user_sql + ")");
        }
        bool publication_exists = r.get(0, 6) == "t";
        if (!publication_exists && r.get(0, 4) != "t")
            error(Side::source, "create_privilege",
                  "role " + user + " lacks CREATE on database " + r.str(0, 5) + ", needed to create the "
                  "publication " + publication + ": GRANT CREATE ON DATABASE " + pg::readable_ident(r.str(0, 5)) +
                  " TO " + user_sql);
        if (publication_exists && r.get(0, 7) != "t")
            error(Side::source, "publication_owner",
                  "publication " + publication + " belongs to role " + r.str(0, 8) + ", not " + user +
                  ", and pgshift sets its table list at every start: ALTER PUBLICATION " +
                  pg::readable_ident(publication) + " OWNER TO " + user_sql + " (or drop it, so pgshift creates it)");
    }

    /// Replica identities (reader::select_tables, as `run` checks them) and the empty selection.
    void check_tables(pg::Connection& c)
    {
        tables_ = reader::select_tables(c, cfg_.tables);
        report_.tables = static_cast<int>(tables_->size());
        if (tables_->empty())
            error(Side::config, "no_tables",
                  "no source table matches tables.include/tables.exclude: check the globs (schema.table, "
                  "e.g. \"public.*\")");
        for (const auto& t : *tables_)
            if (!t.identity_problem.empty())
                error(Side::source, "replica_identity", t.identity_problem);
    }

    /// CREATE/ALTER PUBLICATION ... FOR TABLE needs the owner of every table (or a member of its role).
    void check_table_owners(pg::Connection& c)
    {
        std::vector<std::string> schemas, names;
        for (const auto& t : *tables_) {
            schemas.push_back(t.schema);
            names.push_back(t.name);
        }
        auto r = c.exec_params(
            "SELECT current_user, pg_get_userbyid(c.relowner), t.s || '.' || t.r, "
            "       (SELECT rolsuper FROM pg_roles WHERE oid = c.relowner), "
            "       quote_ident(t.s) || '.' || quote_ident(t.r) "
            "FROM unnest($1::text[], $2::text[]) AS t(s, r) "
            "JOIN pg_namespace n ON n.nspname = t.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r "
            "WHERE NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 2, 3",
            {pg::text_array(schemas), pg::text_array(names)});
        struct Owned {
            bool superuser = false;
            std::vector<std::string> tables, sql;
        };
        std::map<std::string, Owned> by_owner;
        for (int i = 0; i < r.rows(); ++i) {
            auto& o = by_owner[r.str(i, 1)];
            o.superuser = r.get(i, 3) == "t";
            o.tables.push_back(r.str(i, 2));
            o.sql.push_back(r.str(i, 4));
        }
        for (const auto& [owner, o] : by_owner) {
            auto user = pg::readable_ident(r.str(0, 0));
            // Membership in a superuser role would make the migration role a superuser: only
            // suggest it for ordinary owners.
            std::string fix = (o.superuser ? "" : "GRANT " + pg::readable_ident(owner) + " TO " + user + ", or ") +
                              "ALTER TABLE " + (o.sql.size() == 1 ? o.sql[0] : "...") + " OWNER TO " + user +
                              (o.sql.size() == 1 ? "" : " for each") + ", or add " +
                              (o.sql.size() == 1 ? "it" : "them") + " to tables.exclude";
            error(Side::source, "table_owner",
                  "role " + r.str(0, 0) + " does not own " + std::to_string(o.tables.size()) +
                      " selected table(s) of role " + owner + " (" + join_some(o.tables) + "), and adding a table "
                      "to the publication needs its owner: " + fix);
        }
    }

    void check_slot(pg::Connection& c)
    {
        try {
            slot_ = reader::read_slot(c, cfg_.slot_name());
        } catch (const SourceError& e) {
            error(Side::source, "slot_plugin",
                  std::string(e.what()) + ": it is not pgshift's; drop it (SELECT pg_drop_replication_slot('" +
                      cfg_.slot_name() + "')) or give this migration another name");
            return;
        }
        if (slot_->exists && slot_->wal_status == "lost")
            error(Side::source, "slot_lost",
                  "replication slot " + cfg_.slot_name() + " was invalidated by the source (wal_status = lost: "
                  "the WAL it needed was removed, see max_slot_wal_keep_size); changes were lost, so the "
                  "migration must start over from a fresh copy: drop the slot (SELECT pg_drop_replication_slot('" +
                  cfg_.slot_name() + "')) and the target's origins and tables");
        if (slot_->exists && slot_->active)
            warning(Side::source, "slot_active",
                    "replication slot " + cfg_.slot_name() + " is in use by a replication connection: is pgshift "
                    "run already running for migration " + cfg_.name + "? A second one would wait until it ends");
    }

    /// One slot and one WAL sender for `run`'s replication connection, unless they exist already.
    void check_source_capacity(pg::Connection& c)
    {
        auto r = c.exec(
            "SELECT current_setting('max_replication_slots')::int, "
            "       (SELECT count(*) FROM pg_replication_slots), "
            "       (SELECT string_agg(slot_name, ', ' ORDER BY slot_name) FROM pg_replication_slots), "
            "       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)");
        long max_slots = std::stol(r.str(0, 0)), slots = std::stol(r.str(0, 1));
        long max_senders = std::stol(r.str(0, 3)), senders = std::stol(r.str(0, 4));
        bool slot_exists = slot_ && slot_->exists;
        if (!slot_exists && slots >= max_slots)
            error(Side::source, "replication_slots",
                  "max_replication_slots is " + std::to_string(max_slots) + " and " + std::to_string(slots) +
                      " slot(s) exist (" + r.str(0, 2) + "), so the slot " + cfg_.slot_name() +
                      " cannot be created: drop an unused slot (SELECT pg_drop_replication_slot('name')) or raise "
                      "max_replication_slots (ALTER SYSTEM, then restart the source)");
        // An active slot's WAL sender is already counted: a running pgshift's own.
        bool sender_needed = !(slot_ && slot_->active);
        if (sender_needed && senders >= max_senders) {
            replication_possible_ = false;
            error(Side::source, "wal_senders",
                  "max_wal_senders is " + std::to_string(max_senders) + " and all are in use, so pgshift's "
                  "replication connection would be refused: end an unused replication connection "
                  "(pg_stat_replication) or raise max_wal_senders (ALTER SYSTEM, then restart the source)");
        }
    }

    /// The connection `run` streams through, opened for real: proves that pg_hba.conf (and any
    /// pooler) lets a replication connection through. Skipped when a known reason already says it
    /// would fail.
    void check_replication_connection()
    {
        if (!replication_possible_ || !source_ || !source_->is_ok())
            return;
        try {
            pg::ReplicationConnection rc(cfg_.source.conninfo, "pgshift_" + cfg_.name + "_check");
            (void)rc.identify_system();
        } catch (const std::exception& e) {
            error(Side::source, "replication_connection",
                  "cannot open a replication connection (replication=database) as pgshift run does: " +
                      short_error(e) + ": allow it in pg_hba.conf (a line for this database and user suffices for "
                      "logical replication) and connect directly, not through a pooler");
        }
    }

    // --- Target ----------------------------------------------------------------------------

    void check_target_role(pg::Connection& c)
    {
        // The origin functions apply calls; PostgreSQL grants them to superusers only unless a
        // superuser grants EXECUTE.
        static const char* const k_origin_functions[] = {
            "pg_replication_origin_create(text)",
            "pg_replication_origin_oid(text)",
            "pg_replication_origin_advance(text, pg_lsn)",
            "pg_replication_origin_progress(text, boolean)",
            "pg_replication_origin_session_setup(text)",
            "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
        };
        bool v15 = c.server_version() >= 150000;
        std::string sql = "SELECT current_user, rolsuper, has_table_privilege('pg_catalog.pg_replication_origin', "
                          "'SELECT'), ";
        sql += v15 ? "has_parameter_privilege('session_replication_role', 'SET')" : "rolsuper";
        for (const char* f : k_origin_functions)
            sql += ", has_function_privilege(" + pg::quote_literal(std::string("pg_catalog.") + f) + ", 'EXECUTE')";
        sql += " FROM pg_roles WHERE rolname = current_user";
        auto r = c.exec(sql);
        if (r.rows() != 1)
            throw InternalError("the current role is not in pg_roles");
        auto user = r.str(0, 0);
        auto user_sql = pg::readable_ident(user);
        if (r.get(0, 1) == "t")
            return;
        std::vector<std::string> missing;
        for (std::size_t i = 0; i < std::size(k_origin_functions); ++i)
            if (r.get(0, static_cast<int>(4 + i)) != "t")
                missing.push_back(std::string("pg_catalog.") + k_origin_functions[i]);
        if (!missing.empty())
            error(Side::target, "origin_privilege",
                  "role " + user + " may not manage replication origins (apply records its progress in one per "
                  "worker): as a superuser, GRANT EXECUTE ON FUNCTION " + join_all(missing) + " TO " + user_sql);
        if (r.get(0, 2) != "t")
            error(Side::target, "origin_privilege",
                  "role " + user + " may not read pg_replication_origin (apply looks up its origins there): "
                  "GRANT SELECT ON pg_catalog.pg_replication_origin TO " + user_sql + " (as a superuser)");
        if (r.get(0, 3) != "t")
            error(Side::target, "session_replication_role",
                  "role " + user + " may not set session_replication_role, which apply sessions set to replica "
                  "(no user triggers or foreign-key re-checks on replayed rows): " +
                      (v15 ? "GRANT SET ON PARAMETER session_replication_role TO " + user_sql + " (as a superuser)"
                           : std::string("before PostgreSQL 15 only a superuser may: run pgshift as a superuser "
                                         "on the target")));
    }

    /// The capacity rule apply::Engine::connect enforces (apply/origins.hpp).
    void check_origin_capacity(pg::Connection& c)
    {
        int workers = std::clamp(cfg_.apply.workers, 1, static_cast<int>(queue::Stats::k_max_workers));
        if (auto problem = apply::origin_shortfall(c, cfg_, workers))
            error(Side::target, "origin_slots", *problem);
    }

    void read_origins(pg::Connection& c)
    {
        auto r = c.exec_params("SELECT roname, pg_replication_origin_progress(roname, false) "
                               "FROM pg_replication_origin WHERE roname ~ $1 ORDER BY roname",
                               {cfg_.origin_pattern()});
        origins_.emplace();
        for (int i = 0; i < r.rows(); ++i) {
            origins_->names.push_back(r.str(i, 0));
            auto lsn = Lsn::parse(r.get(i, 1));
            if (lsn && !lsn->is_zero() && (!origins_->progress || *origins_->progress < *lsn))
                origins_->progress = *lsn;
        }
    }

    /// Apply runs INSERT, UPDATE and DELETE (whose WHERE reads the key: SELECT) and TRUNCATE.
    void check_table_privileges(pg::Connection& c)
    {
        std::vector<std::string> schemas, names;
        for (const auto& t : *tables_) {
            schemas.push_back(t.schema);
            names.push_back(t.name);
        }
        auto r = c.exec_params(
            "SELECT current_user, t.s, quote_ident(t.s) || '.' || quote_ident(t.r), "
            "       has_schema_privilege(n.oid, 'USAGE'), "
            "       concat_ws(', ', CASE WHEN NOT has_table_privilege(c.oid, 'SELECT') THEN 'SELECT' END, "
            "                       CASE WHEN NOT has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END, "
            "                       CASE WHEN NOT has_table_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END, "
            "                       CASE WHEN NOT has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END, "
            "                       CASE WHEN NOT has_table_privilege(c.oid, 'TRUNCATE') THEN 'TRUNCATE' END) "
            "FROM unnest($1::text[], $2::text[]) AS t(s, r) "
            "JOIN pg_namespace n ON n.nspname = t.s "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r AND c.relkind IN ('r', 'p') "
            "ORDER BY 2, 3",
            {pg::text_array(schemas), pg::text_array(names)});
        std::map<std::string, std::vector<std::string>> no_usage;   // schema -> tables
        std::map<std::string, std::vector<std::string>> by_missing; // "INSERT, UPDATE" -> tables
        std::string user;
        for (int i = 0; i < r.rows(); ++i) {
            user = r.str(i, 0);
            if (r.get(i, 3) != "t")
                no_usage[r.str(i, 1)].push_back(r.str(i, 2));
            if (!r.get(i, 4).empty())
                by_missing[r.str(i, 4)].push_back(r.str(i, 2));
        }
        for (const auto& [schema, tables] : no_usage)
            error(Side::target, "schema_privilege",
                  "role " + user + " lacks USAGE on schema " + schema + " (tables " + join_some(tables) +
                      "): GRANT USAGE ON SCHEMA " + pg::readable_ident(schema) + " TO " + pg::readable_ident(user));
        for (const auto& [privileges, tables] : by_missing)
            error(Side::target, "table_privilege",
                  "role " + user + " lacks " + privileges + " on " + join_some(tables) + ", which apply needs: GRANT " +
                      privileges + " ON " + join_all(tables) + " TO " + pg::readable_ident(user));
    }

    // --- Both sides ------------------------------------------------------------------------

    void check_versions()
    {
        int src = source_->server_version(), dst = target_->server_version();
        if (major_of(dst) < major_of(src))
            error(Side::target, "server_version",
                  "the target runs PostgreSQL " + version_text(dst) + ", older than the source's " +
                      version_text(src) + ": the source's types, syntax and dumps may not be understood by an "
                      "older server; migrate to a target of the same or a newer major version");
    }

    void check_schemas(pg::Connection& target)
    {
        // With an initial copy and schema: copy, a table missing on the target is created by
        // `run` (from pg_dump's definition) before its rows are copied: not a problem here.
        if (!source_->is_ok())
            return;
        const bool creates_tables = cfg_.initial_copy.enabled && cfg_.schema == config::SchemaMode::copy;
        for (const auto& d : compare_schemas(*source_, target, *tables_))
            if (!(creates_tables && d.kind == DifferenceKind::missing_table))
                error(Side::target, code(d.kind), d.message);
    }

    /// A slot without origins or origins without a slot: what an earlier run left behind.
    void check_leftovers()
    {
        if (!slot_ || !origins_)
            return;
        auto slot = cfg_.slot_name();
        std::string drop_origins;
        for (const auto& o : origins_->names)
            drop_origins += (drop_origins.empty() ? "" : "; ") + std::string("SELECT pg_replication_origin_drop('") +
                            o + "')";
        if (slot_->exists && origins_->names.empty())
            warning(Side::source, "leftover_slot",
                    "replication slot " + slot + " exists but the target has no replication origin of migration " +
                        cfg_.name + ": a leftover of an earlier run whose target was reset? pgshift run would "
                        "stream from the slot's position (" + slot_->confirmed_flush.str() + "), which is right "
                        "only if the target holds every change before it. To start over, drop it on the source: "
                        "SELECT pg_drop_replication_slot('" + slot + "')");
        if (!slot_->exists && !origins_->names.empty()) {
            if (origins_->progress)
                error(Side::target, "leftover_origin",
                      "the target's origins of migration " + cfg_.name + " have applied up to " +
                          origins_->progress->str() + " but the slot " + slot + " does not exist on the source: "
                          "changes since then cannot be recovered, and pgshift run refuses to start. Start the "
                          "migration over: on the target, empty the tables and drop the origins (" +
                          drop_origins + ")");
            else
                warning(Side::target, "leftover_origin",
                        "the target has replication origins of migration " + cfg_.name + " (" +
                            join_some(origins_->names) + ") without progress, and the source has no slot " + slot +
                            ": leftovers of an earlier run that never streamed; pgshift run reuses them. To clean "
                            "up, on the target: " + drop_origins);
        }
    }


    struct Origins {
        std::vector<std::string> names;
        std::optional<Lsn> progress; ///< the highest non-zero progress, if any
    };

    const config::Config& cfg_;
    const config::EnvLookup& env_;
    Report report_;
    std::unique_ptr<pg::Connection> source_, target_;
    bool lost_[3] = {false, false, false};
    bool replication_possible_ = true; ///< no known reason the replication connection must fail
    std::optional<std::vector<reader::SourceTable>> tables_;
    std::optional<reader::SlotInfo> slot_;
    std::optional<Origins> origins_;
};

} // namespace

const char* name(Severity s) { return s == Severity::error ? "error" : "warning"; }

const char* name(Side s)
{
    switch (s) {
    case Side::config: return "config";
    case Side::source: return "source";
    case Side::target: return "target";
    }
    return "config";
}

int Report::count(Severity s) const
{
    return static_cast<int>(std::count_if(problems.begin(), problems.end(),
                                          [s](const Problem& p) { return p.severity == s; }));
}

Report run_checks(const config::Config& cfg, const config::EnvLookup& env) { return Checker(cfg, env).run(); }

} // namespace pgshift::check
