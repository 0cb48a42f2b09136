// The preflight checks of `pgshift check`, one named step each, on read-only connections.
#include "pgshift/check/check.hpp"

#include "pgshift/apply/later_objects.hpp"
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

/// Who needs what a check looks for. `pgshift run` itself: a problem is an error. Cutover or
/// rollback, later: a warning, because streaming works without it; its message starts with what
/// will fail ("rollback will fail: ...") and its code with the phase ("rollback_wal_level").
struct Need {
    const char* phase; ///< in messages: "the role may lack a privilege <phase> needs too"
    Severity severity;
    const char* code_prefix;
    const char* message_prefix;
};
constexpr Need k_run{"pgshift run", Severity::error, "", ""};
constexpr Need k_cutover{"cutover", Severity::warning, "cutover_", "cutover will fail: "};
constexpr Need k_reverse_setup{"cutover", Severity::warning, "cutover_",
                               "cutover will fail (setting up the reverse stream, which rollback needs): "};
constexpr Need k_rollback{"rollback", Severity::warning, "rollback_", "rollback will fail: "};

/// One direction of streaming as the checks see it: its configuration (which server is the
/// upstream, the slot, publication and origin names) and who needs what it needs. Setting it up
/// (publication, slot, origins) and keeping it streaming (a WAL sender, a replication connection,
/// apply's privileges) are both needed by `run` for the forward direction. The reverse one is set
/// up by cutover before it switches (cutover stops and is undone when it cannot: switchover.cpp,
/// prepare_new_direction), and streams afterwards; rollback waits for it to catch up.
struct Direction {
    const config::Config& cfg;
    const Need& setup;
    const Need& streaming;
};

/// Where cutover keeps its state (the table pgshift.switchover, on the target) and where the
/// write fence (cutover.fence: read_only) creates its function: schema pgshift.
constexpr const char* k_pgshift_schema = "pgshift";
constexpr const char* k_record_table = "switchover";

/// Relations by name, as two parallel arrays for unnest($1::text[], $2::text[]).
struct Relations {
    std::vector<std::string> schemas, names;
};

Relations relations_of(const std::vector<reader::SourceTable>& tables)
{
    Relations out;
    for (const auto& t : tables) {
        out.schemas.push_back(t.schema);
        out.names.push_back(t.name);
    }
    return out;
}

/// What lacking_privileges() found.
struct Lacking {
    std::string user;
    std::map<std::string, std::vector<std::string>> no_usage;   ///< schema -> relations in it
    std::map<std::string, std::vector<std::string>> by_missing; ///< "INSERT, UPDATE" -> relations
};

/// The current role's missing `privileges` (has_table_privilege's names) on the relations of
/// `rels` that exist with a relkind in `relkinds`, and the schemas among theirs it may not use.
/// The one query behind every table and sequence privilege check, on either side.
Lacking lacking_privileges(pg::Connection& c, const Relations& rels, std::initializer_list<const char*> privileges,
                           const std::vector<std::string>& relkinds)
{
    std::string missing;
    for (const char* p : privileges)
        missing += std::string(", CASE WHEN NOT has_table_privilege(c.oid, '") + p + "') THEN '" + p + "' END";
    auto r = c.exec_params("SELECT current_user, t.s, quote_ident(t.s) || '.' || quote_ident(t.r), "
                           "       has_schema_privilege(n.oid, 'USAGE'), concat_ws(', '" + missing + ") "
                           "FROM unnest($1::text[], $2::text[]) AS t(s, r) "
                           "JOIN pg_namespace n ON n.nspname = t.s "
                           "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r "
                           "     AND c.relkind::text = ANY($3::text[]) "
                           "ORDER BY 2, 3",
                           {pg::text_array(rels.schemas), pg::text_array(rels.names), pg::text_array(relkinds)});
    Lacking out;
    for (int i = 0; i < r.rows(); ++i) {
        out.user = r.str(i, 0);
        if (r.get(i, 3) != "t")
            out.no_usage[r.str(i, 1)].push_back(r.str(i, 2));
        if (!r.get(i, 4).empty())
            out.by_missing[r.str(i, 4)].push_back(r.str(i, 2));
    }
    return out;
}

/// The relations of `rels` on which row-level security applies to the current role (enabled, and
/// the role neither owns the table nor has BYPASSRLS or superuser; or FORCEd for the owner too),
/// as readable names, and the role. pgshift's sessions run with row_security=off (pg::k_all_rows),
/// so on these tables they would fail rather than filter rows.
std::pair<std::string, std::vector<std::string>> row_security_applies(pg::Connection& c, const Relations& rels)
{
    auto r = c.exec_params("SELECT current_user, quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
                           "FROM unnest($1::text[], $2::text[]) AS t(s, r) "
                           "JOIN pg_namespace n ON n.nspname = t.s "
                           "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r AND c.relkind IN ('r', 'p') "
                           "WHERE c.relrowsecurity "
                           "  AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user "
                           "                  AND (rolsuper OR rolbypassrls)) "
                           "  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) "
                           "ORDER BY 2",
                           {pg::text_array(rels.schemas), pg::text_array(rels.names)});
    std::pair<std::string, std::vector<std::string>> out;
    for (int i = 0; i < r.rows(); ++i) {
        out.first = r.str(i, 0);
        out.second.push_back(r.str(i, 1));
    }
    return out;
}

/// `text` with every "on the target" made "on the <side>". XXX: apply::origin_shortfall words
/// its problem for the target, where forward apply runs; after cutover apply runs on the source.
std::string on_side(std::string text, Side side)
{
    const std::string from = "on the target", to = std::string("on the ") + name(side);
    for (auto p = text.find(from); p != std::string::npos; p = text.find(from, p + to.size()))
        text.replace(p, from.size(), to);
    return text;
}

class Checker {
public:
    Checker(const config::Config& cfg, const config::EnvLookup& env)
        : cfg_(cfg), env_(env), reversed_(cfg.reversed())
    {
    }

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
            check(forward_, Side::source, "wal_level", &Checker::check_wal_level);
            on(Side::source, "whether the source is a standby", &Checker::check_source_standby);
            on(Side::source, "max_slot_wal_keep_size", &Checker::check_wal_keep_size);
            check(forward_, Side::source, "the role's privileges", &Checker::check_publisher_role);
            on(Side::source, "the selected tables", &Checker::check_tables);
            on(Side::source, "what the migration does not carry", &Checker::check_not_carried);
            if (tables_) {
                check(forward_, Side::source, "ownership of the selected tables", &Checker::check_table_owners);
                on(Side::source, "row-level security on the selected tables", &Checker::check_source_row_security);
            }
            on(Side::source, "the replication slot", &Checker::check_slot);
            check(forward_, Side::source, "free replication slots and WAL senders",
                  &Checker::check_replication_capacity);
            check_replication_connection(forward_, Side::source);
        }
        if (target_) {
            report_.target_version = version_text(target_->server_version());
            on(Side::target, "for a pooler", &Checker::check_target_pooler);
            on(Side::target, "whether the target is a standby", &Checker::check_target_standby);
            check(forward_, Side::target, "the role's privileges", &Checker::check_apply_role);
            check(forward_, Side::target, "free replication origins", &Checker::check_origin_capacity);
            on(Side::target, "the migration's replication origins", &Checker::read_origins);
            if (tables_)
                check(forward_, Side::target, "privileges on the target tables", &Checker::check_table_privileges);
            if (tables_)
                check(forward_, Side::target, "row-level security on the target tables",
                      &Checker::check_apply_row_security);
        }
        if (source_ && target_) {
            check_versions();
            if (tables_)
                on(Side::target, "the target tables against the source", &Checker::check_schemas);
            check_leftovers();
        }
        check_cutover_and_rollback();
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

    /// A problem found for `need`: an error for `run`, a warning saying what will fail for cutover or rollback.
    void report(const Need& need, Side side, const std::string& code, const std::string& message)
    {
        add(need.severity, side, need.code_prefix + code, need.message_prefix + message);
    }

    pg::Connection* conn(Side side) { return side == Side::source ? source_.get() : target_.get(); }
    static int index(Side side) { return static_cast<int>(side); }

    /// A check of what one direction of streaming needs on `side` (its upstream or its target):
    /// for `run` in the forward direction, for cutover and rollback in the reverse one.
    using DirectionCheck = void (Checker::*)(const Direction&, Side, pg::Connection&);
    void check(const Direction& d, Side side, const char* what, DirectionCheck f)
    {
        step(side, what, [&](pg::Connection& c) { (this->*f)(d, side, c); }, d.setup);
    }
    /// A check of what cutover or rollback needs besides the reverse stream.
    using Check = void (Checker::*)(const Need&, Side, pg::Connection&);
    void check(const Need& need, Side side, const char* what, Check f)
    {
        step(side, what, [&](pg::Connection& c) { (this->*f)(need, side, c); }, need);
    }

    /// Runs one check on `side`'s connection. A failure (a query the role may not run, the
    /// connection lost) becomes this check's problem; the other checks still run. Skipped when
    /// the side could not be reached (already reported) or was lost (reported once).
    template <class F>
    void step(Side side, const char* what, F&& f, const Need& need = k_run)
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
            // Not "will fail": nobody knows. A warning for cutover or rollback, as the problems
            // this check looks for would be.
            add(need.severity, side, need.code_prefix + std::string("check_failed"),
                std::string("could not check ") + what + ": " + short_error(e) + " (the role may lack a privilege " +
                    need.phase + " needs too)");
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

    /// Logical decoding on the server changes are streamed from: the source for `run`, the
    /// target for the reverse stream (without it nothing the application writes there can go back).
    void check_wal_level(const Direction& d, Side side, pg::Connection& c)
    {
        static const char* const k_managed = "on RDS/Aurora set rds.logical_replication = 1 in the parameter group; "
                                             "on Cloud SQL the flag cloudsql.logical_decoding = on";
        try {
            reader::require_logical_wal(c);
        } catch (const SourceError& e) {
            replication_possible_[index(side)] = false;
            if (!d.cfg.is_reverse())
                report(d.setup, side, "wal_level",
                       std::string(e.what()) + ": ALTER SYSTEM SET wal_level = logical, then restart the source (" +
                           k_managed + ")");
            else // require_logical_wal's message says "source": worded here for the target.
                report(d.setup, side, "wal_level",
                       "the target's wal_level is not 'logical', so pgshift cannot stream the target's changes "
                       "back to the source after cutover and rollback is impossible: set wal_level = logical on the "
                       "target and restart it (ALTER SYSTEM SET wal_level = logical; " + std::string(k_managed) +
                           ")");
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

    /// The current role's attributes and database-level privileges: one query for every check
    /// that needs them, on either side.
    struct Role {
        std::string user, user_sql, database;
        bool superuser = false;
        bool replication = false; ///< REPLICATION, or membership in RDS's rds_replication
        bool create_on_database = false;
        bool signal_backend = false; ///< may end other roles' sessions (pg_signal_backend; superuser)
        bool publication_exists = false, owns_publication = false; ///< of the publication asked about
        std::string publication_owner;
        bool schema_exists = false, create_on_schema = false; ///< schema pgshift (k_pgshift_schema)
        bool record_exists = false;                           ///< cutover's table pgshift.switchover
    };

    /// `publication`: the one to report on (that of the direction streaming from this server), or
    /// "" when the caller does not look at publications.
    Role read_role(pg::Connection& c, const std::string& publication)
    {
        auto r = c.exec_params(
            "SELECT current_user, r.rolsuper, r.rolreplication, "
            "       EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' "
            "               AND pg_has_role(current_user, g.oid, 'MEMBER')), "
            "       has_database_privilege(current_database(), 'CREATE'), current_database(), "
            "       p.pubname IS NOT NULL, pg_has_role(p.pubowner, 'USAGE'), pg_get_userbyid(p.pubowner), "
            "       pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'), "
            "       s.oid IS NOT NULL, has_schema_privilege(s.oid, 'CREATE'), "
            "       EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = s.oid AND relname = $3) "
            "FROM pg_roles r LEFT JOIN pg_publication p ON p.pubname = $1 "
            "LEFT JOIN pg_namespace s ON s.nspname = $2 "
            "WHERE r.rolname = current_user",
            {publication, std::string(k_pgshift_schema), std::string(k_record_table)});
        if (r.rows() != 1)
            throw InternalError("the current role is not in pg_roles");
        Role role;
        role.user = r.str(0, 0);
        role.user_sql = pg::readable_ident(role.user);
        role.superuser = r.get(0, 1) == "t";
        role.replication = r.get(0, 2) == "t" || r.get(0, 3) == "t";
        role.create_on_database = r.get(0, 4) == "t";
        role.database = r.str(0, 5);
        role.publication_exists = r.get(0, 6) == "t";
        role.owns_publication = r.get(0, 7) == "t";
        role.publication_owner = r.str(0, 8);
        role.signal_backend = r.get(0, 9) == "t";
        role.schema_exists = r.get(0, 10) == "t";
        role.create_on_schema = r.get(0, 11) == "t";
        role.record_exists = r.get(0, 12) == "t";
        return role;
    }

    /// What creating an object in schema pgshift needs of `role` (CREATE on the database while the
    /// schema does not exist, then CREATE on it), as "lacks ..., needed to create <object>: fix";
    /// empty when nothing is missing.
    static std::string pgshift_schema_problem(const Role& role, const std::string& object)
    {
        const std::string schema = k_pgshift_schema;
        if (!role.schema_exists && !role.create_on_database)
            return "lacks CREATE on database " + role.database + ", needed to create schema " + schema + " for " +
                   object + ": GRANT CREATE ON DATABASE " + pg::readable_ident(role.database) + " TO " +
                   role.user_sql + ", or as a superuser CREATE SCHEMA " + schema + " AUTHORIZATION " + role.user_sql;
        if (role.schema_exists && !role.create_on_schema)
            return "lacks CREATE on schema " + schema + ", needed to create " + object + " there: GRANT CREATE ON "
                   "SCHEMA " + schema + " TO " + role.user_sql;
        return {};
    }

    /// What streaming changes out needs of the role: REPLICATION (for the slot and the replication
    /// connection), and CREATE on the database for the publication, or owning it when it exists.
    /// On the source for `run`, on the target for the reverse stream.
    void check_publisher_role(const Direction& d, Side side, pg::Connection& c)
    {
        auto publication = d.cfg.publication_name();
        auto role = read_role(c, publication);
        if (!role.superuser && !role.replication) {
            replication_possible_[index(side)] = false;
            report(d.setup, side, "replication_privilege",
                   "role " + role.user + " has neither the REPLICATION attribute nor superuser, so it cannot " +
                       (d.cfg.is_reverse() ? "create the slot " + d.cfg.slot_name() + " nor open the replication "
                                             "connection that streams changes back to the source"
                                           : std::string("open the replication connection that streams changes")) +
                       ": ALTER ROLE " + role.user_sql + " REPLICATION (as a superuser; on RDS/Aurora GRANT "
                       "rds_replication TO " + role.user_sql + ")");
        }
        if (!role.publication_exists && !role.create_on_database)
            report(d.setup, side, "create_privilege",
                   "role " + role.user + " lacks CREATE on database " + role.database + ", needed to create the "
                   "publication " + publication + ": GRANT CREATE ON DATABASE " + pg::readable_ident(role.database) +
                       " TO " + role.user_sql);
        if (role.publication_exists && !role.owns_publication)
            report(d.setup, side, "publication_owner",
                   "publication " + publication + " belongs to role " + role.publication_owner + ", not " +
                       role.user + ", and pgshift sets its table list at every start: ALTER PUBLICATION " +
                       pg::readable_ident(publication) + " OWNER TO " + role.user_sql +
                       " (or drop it, so pgshift creates it)");
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

    /// Unlogged tables, materialized views and large objects: streaming works, but they stay behind.
    void check_not_carried(pg::Connection& c)
    {
        for (auto& n : reader::not_carried(c, cfg_.tables))
            warning(Side::source, std::move(n.code), std::move(n.message));
    }

    /// CREATE/ALTER PUBLICATION ... FOR TABLE needs the owner of every table (or a member of its
    /// role): on the source for `run`, on the target for the reverse stream's publication.
    void check_table_owners(const Direction& d, Side side, pg::Connection& c)
    {
        auto rels = relations_of(*tables_);
        auto r = c.exec_params(
            "SELECT current_user, pg_get_userbyid(c.relowner), t.s || '.' || t.r, "
            "       (SELECT rolsuper FROM pg_roles WHERE oid = c.relowner), "
            "       quote_ident(t.s) || '.' || quote_ident(t.r) "
            "FROM unnest($1::text[], $2::text[]) AS t(s, r) "
            "JOIN pg_namespace n ON n.nspname = t.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r "
            "WHERE NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 2, 3",
            {pg::text_array(rels.schemas), pg::text_array(rels.names)});
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
            report(d.setup, side, "table_owner",
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

    /// One slot and one WAL sender for the direction's replication connection, unless its slot
    /// exists already (and, when active, has its WAL sender already): on the source for `run`, on
    /// the target for the reverse stream (cutover drops a leftover slot of it and creates it again).
    void check_replication_capacity(const Direction& d, Side side, pg::Connection& c)
    {
        auto slot = d.cfg.slot_name();
        auto r = c.exec_params(
            "SELECT current_setting('max_replication_slots')::int, "
            "       (SELECT count(*) FROM pg_replication_slots), "
            "       (SELECT string_agg(slot_name, ', ' ORDER BY slot_name) FROM pg_replication_slots), "
            "       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication), "
            "       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1), "
            "       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active)",
            {slot});
        long max_slots = std::stol(r.str(0, 0)), slots = std::stol(r.str(0, 1));
        long max_senders = std::stol(r.str(0, 3)), senders = std::stol(r.str(0, 4));
        bool slot_exists = r.get(0, 5) == "t", slot_active = r.get(0, 6) == "t";
        if (!slot_exists && slots >= max_slots)
            report(d.setup, side, "replication_slots",
                   "max_replication_slots is " + std::to_string(max_slots) + " and " + std::to_string(slots) +
                       " slot(s) exist (" + r.str(0, 2) + "), so the slot " + slot +
                       " cannot be created: drop an unused slot (SELECT pg_drop_replication_slot('name')) or raise "
                       "max_replication_slots (ALTER SYSTEM, then restart the " + name(side) + ")");
        // An active slot's WAL sender is already counted: a running pgshift's own.
        if (!slot_active && senders >= max_senders) {
            replication_possible_[index(side)] = false;
            report(d.streaming, side, "wal_senders",
                   "max_wal_senders is " + std::to_string(max_senders) + " and all are in use, so pgshift's "
                   "replication connection would be refused: end an unused replication connection "
                   "(pg_stat_replication) or raise max_wal_senders (ALTER SYSTEM, then restart the " + name(side) + ")");
        }
    }

    /// The connection changes are streamed through, opened for real: proves that pg_hba.conf (and
    /// any pooler) lets a replication connection through; to the source for `run`, to the target
    /// for the reverse stream after cutover. Skipped when a known reason already says it would fail.
    void check_replication_connection(const Direction& d, Side side)
    {
        auto* c = conn(side);
        if (!replication_possible_[index(side)] || !c || !c->is_ok())
            return;
        try {
            pg::ReplicationConnection rc(d.cfg.source.conninfo, "pgshift_" + cfg_.name + "_check");
            (void)rc.identify_system();
        } catch (const std::exception& e) {
            report(d.streaming, side, "replication_connection",
                   std::string("cannot open a replication connection (replication=database) as pgshift ") +
                       (d.cfg.is_reverse() ? "does after cutover, to stream changes back" : "run does") + ": " +
                       short_error(e) + ": allow it in pg_hba.conf (a line for this database and user suffices for "
                       "logical replication) and connect directly, not through a pooler");
        }
    }

    // --- Target (and the source as the apply target after cutover) -------------------------

    /// What apply needs of the role besides table privileges: the replication origin functions
    /// (which setting up the direction calls first) and session_replication_role (streaming). On
    /// the target for `run`; on the source for the reverse stream.
    void check_apply_role(const Direction& d, Side side, pg::Connection& c)
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
            report(d.setup, side, "origin_privilege",
                   "role " + user + " may not manage replication origins (apply records its progress in one per "
                   "worker): as a superuser, GRANT EXECUTE ON FUNCTION " + join_all(missing) + " TO " + user_sql);
        if (r.get(0, 2) != "t")
            report(d.setup, side, "origin_privilege",
                   "role " + user + " may not read pg_replication_origin (apply looks up its origins there): "
                   "GRANT SELECT ON pg_catalog.pg_replication_origin TO " + user_sql + " (as a superuser)");
        if (r.get(0, 3) != "t")
            report(d.streaming, side, "session_replication_role",
                   "role " + user + " may not set session_replication_role, which apply sessions set to replica "
                   "(no user triggers or foreign-key re-checks on replayed rows): " +
                       (v15 ? "GRANT SET ON PARAMETER session_replication_role TO " + user_sql + " (as a superuser)"
                            : "before PostgreSQL 15 only a superuser may: run pgshift as a superuser on the " +
                                  std::string(name(side))));
    }

    /// The capacity rule apply::Engine::connect enforces (apply/origins.hpp), on the target for
    /// `run`; on the source for the reverse stream, as cutover checks it before creating its origins.
    void check_origin_capacity(const Direction& d, Side side, pg::Connection& c)
    {
        int workers = std::clamp(cfg_.apply.workers, 1, static_cast<int>(queue::Stats::k_max_workers));
        if (auto problem = apply::origin_shortfall(c, d.cfg, workers))
            report(d.setup, side, "origin_slots", on_side(*problem, side));
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

    /// Apply runs INSERT, UPDATE and DELETE (whose WHERE reads the key: SELECT) and TRUNCATE: on
    /// the target for `run`, on the source for the reverse stream.
    void check_table_privileges(const Direction& d, Side side, pg::Connection& c)
    {
        report_lacking(d.streaming, side,
                       lacking_privileges(c, relations_of(*tables_),
                                          {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"}, {"r", "p"}),
                       "table", "apply needs");
    }

    /// Row-level security that would make `who` fail on a selected table of `side` (error for
    /// `need` = run, else a warning of what will fail).
    void report_row_security(const Need& need, Side side, pg::Connection& c, const std::string& who)
    {
        auto [user, tables] = row_security_applies(c, relations_of(*tables_));
        if (tables.empty())
            return;
        report(need, side, "row_security",
               "row-level security applies to role " + user + " on " + join_some(tables) +
                   " (enabled, and the role does not own the table or it is FORCEd, and the role has neither "
                   "BYPASSRLS nor superuser): " + who +
                   " must see every row, so pgshift runs with row_security=off and would fail there rather than "
                   "miss rows. Fix: ALTER ROLE " + pg::readable_ident(user) +
                   " BYPASSRLS (as a superuser), or make the role the tables' owner (and ALTER TABLE ... NO FORCE "
                   "ROW LEVEL SECURITY where forced)");
    }

    /// Apply (writing) on the target of `d`.
    void check_apply_row_security(const Direction& d, Side side, pg::Connection& c)
    {
        report_row_security(d.streaming, side, c, "apply");
    }

    /// The initial copy (reading) on the source; verify reads there too, so without a copy a warning.
    void check_source_row_security(pg::Connection& c)
    {
        static constexpr Need k_verify{"verify", Severity::warning, "verify_", "verify will fail: "};
        report_row_security(cfg_.initial_copy.enabled ? k_run : k_verify, Side::source, c,
                            cfg_.initial_copy.enabled ? "the initial copy (and verify)" : "verify");
    }

    /// One line per schema the role may not use, one per set of missing privileges, each with its
    /// GRANT. `kind` is "table" or "sequence"; `needed_by` ends "..., which <needed_by>: GRANT".
    void report_lacking(const Need& need, Side side, const Lacking& l, const std::string& kind,
                        const std::string& needed_by)
    {
        auto user_sql = pg::readable_ident(l.user);
        for (const auto& [schema, rels] : l.no_usage)
            report(need, side, "schema_privilege",
                   "role " + l.user + " lacks USAGE on schema " + schema + " (" + kind + "s " + join_some(rels) +
                       "): GRANT USAGE ON SCHEMA " + pg::readable_ident(schema) + " TO " + user_sql);
        for (const auto& [privileges, rels] : l.by_missing)
            report(need, side, kind + "_privilege",
                   "role " + l.user + " lacks " + privileges + " on " + join_some(rels) + ", which " + needed_by +
                       ": GRANT " + privileges + " ON " + (kind == "sequence" ? "SEQUENCE " : "") + join_all(rels) +
                       " TO " + user_sql);
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
        // With schema: copy a missing column is added: before the copy into the empty table, or
        // by apply at the table's first change when the target's rows can get the source's
        // values (apply/columns.hpp), which only `run` can tell: a warning here.
        const bool creates_tables = cfg_.initial_copy.enabled && cfg_.schema == config::SchemaMode::copy;
        const bool adds_columns = cfg_.schema == config::SchemaMode::copy;
        for (const auto& d : compare_schemas(*source_, target, *tables_)) {
            if (creates_tables && d.kind == DifferenceKind::missing_table)
                continue;
            if (adds_columns && d.kind == DifferenceKind::missing_column)
                warning(Side::target, code(d.kind),
                        "table " + d.table + ", column " + d.column + " is missing on the target: pgshift adds it " +
                            (cfg_.initial_copy.enabled ? "before the copy"
                                                       : "at the table's first change, unless the target's rows "
                                                         "cannot get the source's values for it (a volatile "
                                                         "default, an identity or generated column)") +
                            " (schema: copy)");
            else
                error(Side::target, code(d.kind), d.message);
        }
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

    // --- Cutover and rollback ------------------------------------------------------------------
    //
    // Cutover fences writes on the source, copies sequence values to the target, and sets up the
    // reverse stream before it switches: the target becomes the upstream (publication, slot) and
    // the source the apply target (origins); cutover records its progress in pgshift.switchover on
    // the target. After it the reverse stream runs (a WAL sender on the target, apply on the
    // source); rollback fences the target, waits for that stream and copies sequences back.
    // Streaming works without any of this, so every problem is a warning saying what will fail.
    // The reverse stream's needs are checked by the forward checks, run for reverse_.

    /// Indexes and constraints of the selected tables the target lacks (apply/later_objects.hpp):
    /// with schema: copy, run builds them once streaming (a cutover waits for that); with
    /// verify, a cutover is refused while a constraint is missing, and runs without a missing
    /// index. Rules the target has and the source does not stop apply at the first row that
    /// breaks one: run drops them with schema: copy; with verify they are warnings.
    void check_later_objects(pg::Connection& target)
    {
        std::vector<std::string> names;
        for (const auto& t : *tables_)
            names.push_back(t.sql());
        const bool builds = cfg_.schema == config::SchemaMode::copy;
        for (const auto& o : apply::schema_differences(*source_, target, names, std::chrono::seconds(5))) {
            if (o.change == apply::Change::grant) {
                warning(Side::target, "missing_privileges",
                        o.line(builds, "pgshift run grants them there once streaming (schema: copy)"));
                continue;
            }
            if (o.change == apply::Change::analyze)
                continue; // before the copy the target has no rows: run analyzes them once they arrive
            if (o.change == apply::Change::revoke) {
                warning(Side::target, "routine_public_execute",
                        o.line(builds, "pgshift run revokes it there once streaming (schema: copy), and a cutover "
                                       "waits for that"));
                continue;
            }
            if (o.change == apply::Change::defaults) {
                warning(Side::target, "default_privileges_differ",
                        o.line(builds, "pgshift run changes them there once streaming (schema: copy)"));
                continue;
            }
            if (o.change == apply::Change::owner) {
                warning(Side::target, "owner_differs",
                        o.line(builds, "pgshift run changes it there once streaming (schema: copy)"));
                continue;
            }
            if (o.change == apply::Change::create && !o.constraint) {
                warning(Side::target, "missing_routine",
                        o.line(builds, "pgshift run creates it there once streaming (schema: copy)"));
                continue;
            }
            // What blocks a switch whatever the schema mode: a warning when run does it, else
            // what a cutover will refuse.
            auto blocking = [&](const char* code, const char* done) {
                const auto line = o.line(builds, done);
                if (builds && o.by_hand.empty())
                    warning(Side::target, code, line);
                else
                    report(k_cutover, Side::target, code, line);
            };
            if (o.change == apply::Change::create) {
                blocking("missing_enum_value", "pgshift run adds it there once streaming (schema: copy), or at once "
                                               "when a row needs it, and a cutover waits for that");
                continue;
            }
            if (o.change == apply::Change::secure) {
                blocking("row_security_differs", "pgshift run makes it the same there once streaming (schema: copy), "
                                                 "and a cutover waits for that");
                continue;
            }
            if (o.change == apply::Change::detach) {
                warning(Side::target, "target_only_partition",
                        o.line(builds, "pgshift run detaches it there once streaming, its rows kept in it (schema: "
                                       "copy), and a cutover waits for that"));
                continue;
            }
            if (o.what.find("trigger ") != std::string::npos) {
                warning(Side::target, "trigger_differs",
                        o.line(builds, std::string("pgshift run ") + (o.dropped() ? "drops" : "creates") +
                                           " it there once streaming (schema: copy), and a cutover waits for that"));
                continue;
            }
            if (o.dropped()) {
                warning(Side::target, "target_only_rule",
                        o.line(builds, "pgshift run drops it there once streaming (schema: copy), and a cutover "
                                       "waits for that"));
                continue;
            }
            const auto line = o.line(
                builds, "pgshift run builds it there once streaming (schema: copy), and a cutover waits for that");
            // What nobody builds and a cutover waits for: "cutover will fail".
            const bool built_by_run = builds && o.by_hand.empty();
            if (!built_by_run && o.blocks_switch(builds))
                report(k_cutover, Side::target, o.constraint ? "missing_constraint" : "missing_index", line);
            else
                warning(Side::target, o.constraint ? "missing_constraint" : "missing_index",
                        line + (built_by_run ? "" : " (a cutover goes ahead without it, and the new primary runs "
                                                    "the application's queries without it)"));
        }
    }

    void check_cutover_and_rollback()
    {
        const bool fence = cfg_.cutover.fence == config::FenceMode::read_only;
        const bool sequences = cfg_.cutover.sync_sequences && tables_;
        check(k_cutover, Side::target, "what cutover's record needs", &Checker::check_switchover_record);
        if (fence)
            check(k_cutover, Side::source, "what cutover's write fence needs", &Checker::check_fence);
        if (sequences) {
            step(Side::source, "the sequences of the selected tables' schemas", [this](pg::Connection& c) {
                read_sequences(c);
            }, k_cutover);
            check_sequence_sync(k_cutover, Side::source, Side::target);
        }
        if (tables_ && source_)
            step(Side::target, "the target tables' indexes and constraints against the source",
                 [this](pg::Connection& c) { check_later_objects(c); }, k_cutover);

        // The reverse stream: from the target...
        check(reverse_, Side::target, "wal_level for the reverse stream", &Checker::check_wal_level);
        check(reverse_, Side::target, "the role's privileges for the reverse stream", &Checker::check_publisher_role);
        if (tables_) {
            check(reverse_, Side::target, "ownership of the target tables", &Checker::check_table_owners);
            check(reverse_, Side::target, "the target tables' replica identities",
                  &Checker::check_replica_identities);
        }
        check(reverse_, Side::target, "free replication slots and WAL senders for the reverse stream",
              &Checker::check_replication_capacity);
        check_replication_connection(reverse_, Side::target);
        // ... to the source.
        check(reverse_, Side::source, "the role's privileges for the reverse stream", &Checker::check_apply_role);
        check(reverse_, Side::source, "free replication origins for the reverse stream",
              &Checker::check_origin_capacity);
        if (tables_)
            check(reverse_, Side::source, "privileges on the source tables for the reverse stream",
                  &Checker::check_table_privileges);
        if (tables_)
            check(reverse_, Side::source, "row-level security on the source tables for the reverse stream",
                  &Checker::check_apply_row_security);

        if (fence)
            check(k_rollback, Side::target, "what rollback's write fence needs", &Checker::check_fence);
        if (sequences)
            check_sequence_sync(k_rollback, Side::target, Side::source);
    }

    /// Cutover and rollback record their progress in pgshift.switchover on the (configured)
    /// target, creating the schema and the table when missing (cutover/switch_state.cpp).
    void check_switchover_record(const Need& need, Side side, pg::Connection& c)
    {
        auto role = read_role(c, "");
        auto table = std::string(k_pgshift_schema) + "." + k_record_table;
        if (!role.record_exists) {
            if (auto problem = pgshift_schema_problem(role, "the table " + table + ", where cutover records its "
                                                            "progress");
                !problem.empty())
                report(need, side, "record_schema", "role " + role.user + " " + problem);
            return;
        }
        report_lacking(need, side,
                       lacking_privileges(c, {{k_pgshift_schema}, {k_record_table}}, {"SELECT", "INSERT", "UPDATE"},
                                          {"r"}),
                       "table", "cutover needs to record its progress");
    }

    /// cutover.fence: read_only on the server being fenced (the source at cutover, the target at
    /// rollback): pgshift creates schema pgshift if missing, the function pgshift.fence_<name>()
    /// and a statement-level trigger on every selected table, and ends the sessions of other roles
    /// that hold locks on those tables so that it can lock them (cutover/fence.cpp).
    void check_fence(const Need& need, Side side, pg::Connection& c)
    {
        auto role = read_role(c, "");
        auto function = std::string(k_pgshift_schema) + ".fence_" + cfg_.name + "()";
        if (auto problem = pgshift_schema_problem(role, "the write fence's function " + function +
                                                            " (cutover.fence: read_only)");
            !problem.empty())
            report(need, side, "fence_schema",
                   "role " + role.user + " " + problem + ", or set cutover.fence to command or none");
        if (!role.signal_backend)
            report(need, side, "fence_signal_backend",
                   "role " + role.user + " is neither superuser nor a member of pg_signal_backend, so the write "
                   "fence cannot end other roles' sessions holding locks on the selected tables and waits for them "
                   "to end (at most cutover.timeout_seconds): GRANT pg_signal_backend TO " + role.user_sql +
                       " (as a superuser)");
        if (tables_)
            report_lacking(need, side, lacking_privileges(c, relations_of(*tables_), {"TRIGGER"}, {"r", "p"}),
                           "table", "the write fence's trigger needs (cutover.fence: read_only)");
    }

    /// Publishing a table whose UPDATEs and DELETEs the server cannot identify makes them fail
    /// there; cutover checks the new primary's tables (reader::select_tables) and stops.
    void check_replica_identities(const Direction& d, Side side, pg::Connection& c)
    {
        for (const auto& t : reader::select_tables(c, d.cfg.tables))
            if (!t.identity_problem.empty())
                report(d.setup, side, "replica_identity", t.identity_problem);
    }

    /// cutover.sync_sequences: every sequence in the schemas of the selected tables (on the source).
    void read_sequences(pg::Connection& c)
    {
        std::vector<std::string> schemas;
        for (const auto& t : *tables_)
            if (std::find(schemas.begin(), schemas.end(), t.schema) == schemas.end())
                schemas.push_back(t.schema);
        auto r = c.exec_params("SELECT n.nspname, c.relname FROM pg_class c "
                               "JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE c.relkind = 'S' AND n.nspname = ANY($1::text[]) ORDER BY 1, 2",
                               {pg::text_array(schemas)});
        sequences_.emplace();
        for (int i = 0; i < r.rows(); ++i) {
            sequences_->schemas.push_back(r.str(i, 0));
            sequences_->names.push_back(r.str(i, 1));
        }
    }

    /// The sequence sync reads every sequence on `from` (SELECT) and sets it on `to` (setval:
    /// UPDATE); cutover/sequences.cpp. A sequence missing on `to` is skipped there, so here too.
    void check_sequence_sync(const Need& need, Side from, Side to)
    {
        if (!sequences_ || sequences_->names.empty())
            return;
        auto why = [&](const char* does) {
            return std::string("the sequence sync of ") + need.phase + " needs to " + does +
                   " their values (cutover.sync_sequences)";
        };
        step(from, "privileges on the sequences", [&](pg::Connection& c) {
            report_lacking(need, from, lacking_privileges(c, *sequences_, {"SELECT"}, {"S"}), "sequence", why("read"));
        }, need);
        step(to, "privileges on the sequences", [&](pg::Connection& c) {
            report_lacking(need, to, lacking_privileges(c, *sequences_, {"UPDATE"}, {"S"}), "sequence", why("set"));
        }, need);
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
    /// Per side: no known reason a replication connection to it must fail.
    bool replication_possible_[3] = {true, true, true};
    std::optional<std::vector<reader::SourceTable>> tables_;
    std::optional<Relations> sequences_; ///< read only for cutover.sync_sequences
    const config::Config reversed_;   ///< the reverse direction's configuration (_rev object names)
    const Direction forward_{cfg_, k_run, k_run};
    const Direction reverse_{reversed_, k_reverse_setup, k_rollback};
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
