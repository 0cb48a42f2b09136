// Indexes and constraints made on the source later (see later_objects.hpp).
#include "pgshift/apply/later_objects.hpp"

#include "pgshift/apply/table_names.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace pgshift::apply {

namespace {

// An index's definition without its name, so that the same index under another name matches.
constexpr const char* k_index_shape =
    "replace(pg_get_indexdef(i.oid), ' INDEX ' || quote_ident(i.relname) || ' ON ', ' INDEX ON ')";

/// The source tables compared: those of a publication ($1 its name), or a list ($1 a text[] of
/// qualified names). Joined as `t`.
std::string tables_from(bool publication)
{
    return publication ? "pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid AND p.pubname = $1 "
                         "JOIN pg_class t ON t.oid = pr.prrelid "
                       : "unnest($1::text[]) s(tbl) JOIN pg_class t ON t.oid = to_regclass(s.tbl) ";
}

/// The source tables' indexes, with the constraint each one backs.
std::string source_indexes_sql(bool publication)
{
    return std::string("SELECT n.nspname || '.' || t.relname, quote_ident(n.nspname) || '.' || quote_ident(t.relname), "
                       "       i.relname, quote_ident(n.nspname) || '.' || quote_ident(i.relname), "
                       "       pg_get_indexdef(i.oid), ") +
           k_index_shape +
           ", coalesce(c.contype::text, ''), coalesce(c.conname, ''), "
           "       coalesce(pg_get_constraintdef(c.oid), ''), t.relkind::text "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace n ON n.oid = t.relnamespace "
           "JOIN pg_index x ON x.indrelid = t.oid AND x.indisvalid AND x.indisready "
           "JOIN pg_class i ON i.oid = x.indexrelid "
           "LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = t.oid AND c.contype IN ('p', 'u', 'x') "
           "ORDER BY 1, 3";
}

/// The source tables' columns and whether each is NOT NULL (every compared table has a row here).
std::string source_columns_sql(bool publication)
{
    return "SELECT n.nspname || '.' || t.relname, quote_ident(n.nspname) || '.' || quote_ident(t.relname), "
           "       a.attname, a.attnotnull "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace n ON n.oid = t.relnamespace "
           "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped";
}

/// The same tables' indexes on the target (by the source's names), valid or not, whether a
/// build of an invalid one is running, and for the rules the source may have dropped: whether
/// it is unique, backs a constraint, is a partition's part of a parent's index, and its table
/// is partitioned.
std::string target_indexes_sql()
{
    return std::string("SELECT t.tbl, i.relname, ") + k_index_shape +
           ", x.indisvalid AND x.indisready, "
           "       EXISTS (SELECT 1 FROM pg_stat_progress_create_index b WHERE b.index_relid = i.oid), "
           "       x.indisunique, EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid AND k.conrelid = x.indrelid), "
           "       i.relispartition, quote_ident(i.relnamespace::regnamespace::text) || '.' || quote_ident(i.relname), "
           "       (SELECT relkind::text FROM pg_class WHERE oid = x.indrelid) "
           "FROM unnest($1::text[]) t(tbl) "
           "JOIN pg_index x ON x.indrelid = to_regclass(t.tbl) "
           "JOIN pg_class i ON i.oid = x.indexrelid";
}

/// The target's NOT NULL columns of the same tables, and whether each is in the primary key.
const char* const k_target_not_null =
    "SELECT t.tbl, a.attname, "
    "       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = a.attrelid AND x.indisprimary AND a.attnum = ANY (x.indkey)) "
    "FROM unnest($1::text[]) t(tbl) "
    "JOIN pg_attribute a ON a.attrelid = to_regclass(t.tbl) AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull";

std::string source_constraints_sql(bool publication)
{
    return "SELECT n.nspname || '.' || t.relname, quote_ident(n.nspname) || '.' || quote_ident(t.relname), "
           "       c.conname, c.contype::text, pg_get_constraintdef(c.oid), c.convalidated, t.relkind::text "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace n ON n.oid = t.relnamespace "
           "JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype IN ('c', 'f') "
           "ORDER BY 1, 3";
}

/// The same tables' constraints on the target; the last column: its own (not a partition's part
/// of its parent's constraint), so that it can be dropped by itself.
const char* const k_target_constraints =
    "SELECT t.tbl, c.conname, pg_get_constraintdef(c.oid), c.contype::text, c.conislocal AND c.conparentid = 0 "
    "FROM unnest($1::text[]) t(tbl) JOIN pg_constraint c ON c.conrelid = to_regclass(t.tbl)";

/// "CREATE [UNIQUE] INDEX name ON ..." -> "CREATE [UNIQUE] INDEX CONCURRENTLY name ON ...".
std::string concurrently(const std::string& def)
{
    for (const char* head : {"CREATE UNIQUE INDEX ", "CREATE INDEX "}) {
        std::string h = head;
        if (def.compare(0, h.size(), h) == 0)
            return h + "CONCURRENTLY " + def.substr(h.size());
    }
    return "";
}

std::string ends_with_deferrable(const std::string& condef)
{
    if (condef.find(" DEFERRABLE INITIALLY DEFERRED") != std::string::npos)
        return " DEFERRABLE INITIALLY DEFERRED";
    if (condef.find(" DEFERRABLE") != std::string::npos)
        return " DEFERRABLE";
    return "";
}

const char* constraint_kind(char contype)
{
    switch (contype) {
    case 'p': return "primary key";
    case 'u': return "unique constraint";
    case 'x': return "exclusion constraint";
    case 'f': return "foreign key";
    case 'c': return "check constraint";
    default: return "constraint";
    }
}

/// Order: drops first, a foreign key or check before the unique rules a foreign key may point
/// at, NOT NULL last; then builds, what others may reference first (a foreign key needs the
/// unique index it points at), then plain indexes, then the constraints that only check.
int order_of(const LaterObject& o)
{
    if (o.change == Change::secure)
        return 6; // a policy may call a function created before it
    if (o.change == Change::rename)
        return -4;
    if (o.what.rfind("partition ", 0) == 0)
        return -1; // before what is built on the tables (after the drops: same rank as NOT NULL)
    if (o.change == Change::grant)
        return 3;
    if (o.change == Change::create && o.what.rfind("value ", 0) == 0)
        return -1; // an enum's value: before anything that may use it
    if (o.change == Change::create)
        return o.what.rfind("view", 0) == 0 || o.what.rfind("definition of view", 0) == 0 ? 5 : 4; // a view may call a function
    if (!o.dropped() && o.what.rfind("trigger ", 0) == 0)
        return 5; // after the functions it calls
    if (o.dropped()) {
        if (o.what.rfind("foreign key", 0) == 0 || o.what.rfind("check constraint", 0) == 0)
            return -3;
        return o.what.rfind("NOT NULL", 0) == 0 ? -1 : -2;
    }
    if (o.what.rfind("primary key", 0) == 0 || o.what.rfind("unique constraint", 0) == 0)
        return 0;
    if (o.what.rfind("foreign key", 0) == 0 || o.what.rfind("check constraint", 0) == 0)
        return 2;
    return 1;
}

} // namespace

namespace {

/// Reads on `c` in one transaction whose lock waits end after `timeout`.
class ReadTransaction {
public:
    ReadTransaction(pg::Connection& c, std::chrono::milliseconds timeout) : c_(c)
    {
        c_.exec("BEGIN");
        open_ = true;
        c_.exec("SET LOCAL lock_timeout = '" + std::to_string(std::max<long long>(1, timeout.count())) + "ms'");
    }
    ReadTransaction(const ReadTransaction&) = delete;
    ReadTransaction& operator=(const ReadTransaction&) = delete;
    ~ReadTransaction()
    {
        try {
            if (open_ && c_.is_ok())
                c_.exec("ROLLBACK");
        } catch (const std::exception&) {
        }
    }

private:
    pg::Connection& c_;
    bool open_ = false;
};

} // namespace

std::string LaterObject::line(bool builds, const std::string& done) const
{
    std::string line = describe();
    switch (change) {
    case Change::drop:
        line += constraint ? " is on the target but not on the source: the target rejects rows the source accepts "
                             "(apply stops at the first; after a cutover, the application's writes fail): "
                           : " is on the target but not on the source: after a cutover it would fire there: ";
        break;
    case Change::grant:
        line += " are on the source but not on the target: the application connecting as " + name +
                " after a cutover is refused there: ";
        break;
    case Change::rename:
        line += " has another name on the source: after a cutover the application would not find it on the new "
                "primary: ";
        break;
    case Change::secure:
        line += " differs between the servers: after a cutover the application's roles would see or change other "
                "rows on the new primary than on the old: ";
        break;
    case Change::build:
    case Change::create:
        line += " exists on the source but not on the target: ";
        break;
    }
    // The statements as a line shows them: a function's definition runs over many lines, and a
    // role's grants can be many.
    auto shown = [this] {
        if (change == Change::create)
            return steps.front().substr(0, steps.front().find('\n')) +
                   (steps.front().find('\n') != std::string::npos ? " ... (pg_get_functiondef() on the source)" : "");
        if (change == Change::grant || change == Change::secure)
            return steps.front() + (steps.size() > 1 ? "; ... (" + std::to_string(steps.size()) + " statements)" : "");
        return steps.front() + (steps.size() > 1 ? "; " + steps.back() : "");
    };
    if (!by_hand.empty() && change == Change::grant) // a missing role: what it then needs
        return line + by_hand + (builds ? ", then pgshift grants them (schema: copy)" : ", then: " + shown());
    if (!by_hand.empty() && change == Change::secure)
        return line + by_hand + (builds ? ", then pgshift makes it the same (schema: copy)" : ", then: " + shown());
    if (!by_hand.empty())
        return line + by_hand;
    if (builds)
        return line + done;
    const char* what_to_do = change == Change::drop     ? "drop it there: "
                             : change == Change::grant  ? "grant them there: "
                             : change == Change::secure ? "make it the same there, in one transaction: "
                                                        : "create it there: ";
    return line + what_to_do + shown();
}

namespace {

/// The rules the target enforces on the compared tables that the source no longer has (dropped
/// there during the migration): check, foreign-key, unique and exclusion constraints, unique
/// indexes and NOT NULL, matched by name or by definition as in compare(). A primary key is
/// left alone (a source table without one is not replicated by key), and so are a partition's
/// parts of its parent's rules. `src_*` and `dst_*` are compare()'s results.
std::vector<LaterObject> dropped_on_source(pg::Connection& target, const std::string& tables,
                                           const std::map<std::string, std::string>& display,
                                           const pg::Result& src_idx, const pg::Result& src_con,
                                           const pg::Result& src_col, const pg::Result& dst_idx,
                                           const pg::Result& dst_con)
{
    using Pair = std::pair<std::string, std::string>;
    std::set<Pair> names, defs, index_names, index_shapes, nullable;
    for (int i = 0; i < src_idx.rows(); ++i) {
        index_names.insert({src_idx.str(i, 1), src_idx.str(i, 2)});
        index_shapes.insert({src_idx.str(i, 1), src_idx.str(i, 5)});
        if (!src_idx.is_null(i, 6) && !src_idx.get(i, 6).empty()) {
            names.insert({src_idx.str(i, 1), src_idx.str(i, 7)});
            defs.insert({src_idx.str(i, 1), src_idx.str(i, 8)});
        }
    }
    for (int i = 0; i < src_con.rows(); ++i) {
        names.insert({src_con.str(i, 1), src_con.str(i, 2)});
        defs.insert({src_con.str(i, 1), src_con.str(i, 4)});
    }
    for (int i = 0; i < src_col.rows(); ++i)
        if (src_col.get(i, 3) != "t")
            nullable.insert({src_col.str(i, 1), src_col.str(i, 2)});

    std::vector<LaterObject> out;
    auto add = [&](const std::string& table_sql, std::string what, std::string name, std::string step) {
        LaterObject o;
        auto d = display.find(table_sql);
        o.table = d != display.end() ? d->second : table_sql;
        o.what = std::move(what);
        o.name = std::move(name);
        o.constraint = true;
        o.change = Change::drop;
        o.steps = {std::move(step)};
        out.push_back(std::move(o));
    };
    for (int i = 0; i < dst_con.rows(); ++i) {
        const auto table_sql = dst_con.str(i, 0), name = dst_con.str(i, 1), def = dst_con.str(i, 2);
        const auto contype = dst_con.str(i, 3);
        if (contype.size() != 1 || std::string_view("cfux").find(contype[0]) == std::string_view::npos ||
            dst_con.get(i, 4) != "t" || names.count({table_sql, name}) || defs.count({table_sql, def}))
            continue;
        add(table_sql, std::string(constraint_kind(contype[0])) + " " + name, name,
            "ALTER TABLE " + table_sql + " DROP CONSTRAINT IF EXISTS " + pg::quote_ident(name));
    }
    for (int i = 0; i < dst_idx.rows(); ++i) {
        const auto table_sql = dst_idx.str(i, 0), name = dst_idx.str(i, 1);
        // A valid unique index of its own (a constraint's index goes with the constraint).
        if (dst_idx.get(i, 3) != "t" || dst_idx.get(i, 5) != "t" || dst_idx.get(i, 6) == "t" ||
            dst_idx.get(i, 7) == "t" || index_names.count({table_sql, name}) ||
            index_shapes.count({table_sql, dst_idx.str(i, 2)}))
            continue;
        // PostgreSQL cannot drop a partitioned table's index CONCURRENTLY; dropping it is a catalog change.
        const bool partitioned = dst_idx.get(i, 9) == "p";
        add(table_sql, "unique index " + name, name,
            std::string(partitioned ? "DROP INDEX IF EXISTS " : "DROP INDEX CONCURRENTLY IF EXISTS ") +
                dst_idx.str(i, 8));
    }
    auto not_null = target.exec_params(k_target_not_null, {tables});
    for (int i = 0; i < not_null.rows(); ++i) {
        const auto table_sql = not_null.str(i, 0), column = not_null.str(i, 1);
        if (!nullable.count({table_sql, column}) || not_null.get(i, 2) == "t")
            continue;
        add(table_sql, "NOT NULL of column " + column, column,
            "ALTER TABLE " + table_sql + " ALTER COLUMN " + pg::quote_ident(column) + " DROP NOT NULL");
    }
    return out;
}

/// For each role that owns or was granted one of the source's compared tables, or a view of
/// their schemas (not a superuser): the privileges it holds on the source (owned, granted or
/// inherited) on the table or view, the sequences the table owns and the schema. Rows: role, kind (TABLE, SEQUENCE, SCHEMA),
/// object (SQL name), privileges (comma-separated), whether the role is the session's own.
std::string source_privileges_sql(bool publication)
{
    return "WITH p AS (SELECT t.oid, t.relowner, t.relacl, t.relnamespace, n.nspname, t.relname FROM " +
           tables_from(publication) +
           "  JOIN pg_namespace n ON n.oid = t.relnamespace), "
           // The views of the tables' schemas too (the follower creates the missing ones, owned
           // by pgshift's target role), not an extension's.
           "t AS (SELECT * FROM p UNION ALL "
           "  SELECT v.oid, v.relowner, v.relacl, v.relnamespace, n.nspname, v.relname FROM pg_class v "
           "  JOIN pg_namespace n ON n.oid = v.relnamespace "
           "  WHERE v.relkind = 'v' AND v.relnamespace IN (SELECT relnamespace FROM p) "
           "    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
           "                    AND d.objid = v.oid AND d.deptype = 'e')), "
           "r AS (SELECT DISTINCT t.oid AS tbl, ro.oid AS role, ro.rolname FROM t "
           "  JOIN pg_roles ro ON ro.oid = t.relowner "
           "    OR ro.oid IN (SELECT grantee FROM aclexplode(coalesce(t.relacl, acldefault('r', t.relowner)))) "
           "  WHERE NOT ro.rolsuper), "
           "o AS (SELECT t.oid AS tbl, 'TABLE' AS kind, t.oid AS obj, "
           "         quote_ident(t.nspname) || '.' || quote_ident(t.relname) AS sql, "
           "         '{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}'::text[] AS privs FROM t "
           "  UNION ALL "
           "  SELECT t.oid, 'SEQUENCE', s.oid, quote_ident(sn.nspname) || '.' || quote_ident(s.relname), "
           "         '{USAGE,SELECT,UPDATE}' FROM t "
           "  JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid "
           "   AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
           "  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
           "  JOIN pg_namespace sn ON sn.oid = s.relnamespace "
           "  UNION ALL "
           "  SELECT t.oid, 'SCHEMA', t.relnamespace, quote_ident(t.nspname), '{USAGE}' FROM t) "
           "SELECT * FROM (SELECT DISTINCT r.rolname AS role, o.kind AS kind, o.sql AS obj, array_to_string(ARRAY("
           "    SELECT p FROM unnest(o.privs) p WHERE CASE o.kind "
           "      WHEN 'TABLE' THEN has_table_privilege(r.role, o.obj, p) "
           "      WHEN 'SEQUENCE' THEN has_sequence_privilege(r.role, o.obj, p) "
           "      ELSE has_schema_privilege(r.role, o.obj, p) END), ',') AS privs, "
           "  r.rolname = current_user AS own "
           "FROM r JOIN o ON o.tbl = r.tbl) x "
           "ORDER BY role, CASE kind WHEN 'TABLE' THEN 0 WHEN 'SEQUENCE' THEN 1 ELSE 2 END, obj";
}

/// The privileges of source_privileges_sql()'s rows that the same-named role lacks on the
/// target ($1..$4: role, kind, object, privileges); all of them when the role does not exist
/// there, none for an object the target lacks (the table watch's).
const char* const k_target_privileges_missing =
    "SELECT x.role, x.kind, x.obj, to_regrole(quote_ident(x.role)) IS NULL, array_to_string(ARRAY("
    "    SELECT p FROM unnest(string_to_array(x.privs, ',')) p WHERE CASE "
    "      WHEN to_regrole(quote_ident(x.role)) IS NULL THEN true "
    "      WHEN x.kind = 'SCHEMA' THEN CASE WHEN to_regnamespace(x.obj) IS NULL THEN false "
    "        ELSE NOT has_schema_privilege(x.role, to_regnamespace(x.obj)::oid, p) END "
    "      WHEN to_regclass(x.obj) IS NULL THEN false "
    "      WHEN x.kind = 'TABLE' THEN NOT has_table_privilege(x.role, to_regclass(x.obj)::oid, p) "
    "      ELSE NOT has_sequence_privilege(x.role, to_regclass(x.obj)::oid, p) END), ',') "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(role, kind, obj, privs)";

/// One LaterObject per role: the privileges it holds on the source's compared tables (their
/// sequences and schemas) and lacks on the target, with the GRANT statements; a role the target
/// lacks is done by hand. pgshift's own source role is left out when the target has no role of
/// its name (the roles of a migration often differ between the servers).
std::vector<LaterObject> privileges_missing(pg::Connection& source, pg::Connection& target, bool publication,
                                            const std::string& tables_param)
{
    auto src = source.exec_params(source_privileges_sql(publication), {tables_param});
    std::vector<std::string> roles, kinds, objects, privileges;
    std::set<std::string> own;
    for (int i = 0; i < src.rows(); ++i) {
        if (src.get(i, 3).empty())
            continue;
        roles.push_back(src.str(i, 0));
        kinds.push_back(src.str(i, 1));
        objects.push_back(src.str(i, 2));
        privileges.push_back(src.str(i, 3));
        if (src.get(i, 4) == "t")
            own.insert(src.str(i, 0));
    }
    if (roles.empty())
        return {};
    auto dst = target.exec_params(k_target_privileges_missing,
                                  {pg::text_array(roles), pg::text_array(kinds), pg::text_array(objects),
                                   pg::text_array(privileges)});
    struct Role {
        bool missing = false;
        std::vector<std::string> grants, objects;
    };
    std::map<std::string, Role> by_role;
    for (int i = 0; i < dst.rows(); ++i) {
        const auto role = dst.str(i, 0), kind = dst.str(i, 1), object = dst.str(i, 2);
        std::string privs = dst.str(i, 4);
        const bool missing = dst.get(i, 3) == "t";
        if (privs.empty() || (missing && own.count(role)))
            continue;
        std::replace(privs.begin(), privs.end(), ',', ' ');
        std::string list;
        for (std::istringstream in(privs); in >> privs;)
            list += (list.empty() ? "" : ", ") + privs;
        auto& r = by_role[role];
        r.missing = missing;
        r.grants.push_back("GRANT " + list + " ON " + kind + " " + object + " TO " + pg::quote_ident(role));
        r.objects.push_back(list + " on " + (kind == "TABLE" ? "" : kind == "SEQUENCE" ? "sequence " : "schema ") +
                            object);
    }
    std::vector<LaterObject> out;
    for (auto& [role, r] : by_role) {
        LaterObject o;
        o.change = Change::grant;
        o.name = role;
        o.what = "privileges of role " + role + " (";
        for (std::size_t i = 0; i < r.objects.size() && i < 3; ++i)
            o.what += (i ? "; " : "") + r.objects[i];
        o.what += r.objects.size() > 3 ? "; and " + std::to_string(r.objects.size() - 3) + " more)" : ")";
        if (r.missing)
            o.by_hand = "role " + role + " does not exist on the target (pgshift copies no roles or passwords): "
                        "create it there";
        o.steps = std::move(r.grants);
        out.push_back(std::move(o));
    }
    return out;
}

/// The functions, procedures and views in the schemas of the source's compared tables (not an
/// extension's): kind, qualified name (a function's with its argument types), the statement that
/// creates it; functions first, then procedures, then views, each kind in the order the source
/// made them (a view on a view after it). Read with search_path pg_catalog, so that every name in
/// the definitions and argument types comes qualified.
std::string source_routines_sql(bool publication)
{
    return "WITH s AS (SELECT DISTINCT t.relnamespace AS nsp FROM " + tables_from(publication) +
           "), ext AS (SELECT objid, classid FROM pg_depend WHERE deptype = 'e') "
           "SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, "
           "       quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || oidvectortypes(p.proargtypes) || ')', "
           "       pg_get_functiondef(p.oid), p.oid::int8 "
           "FROM pg_proc p JOIN s ON s.nsp = p.pronamespace JOIN pg_namespace n ON n.oid = p.pronamespace "
           "WHERE p.prokind IN ('f', 'p') "
           "  AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid) "
           "UNION ALL "
           "SELECT 'view', quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
           "       'CREATE VIEW ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || "
           "       coalesce(' WITH (' || array_to_string(c.reloptions, ', ') || ')', '') || ' AS ' || pg_get_viewdef(c.oid), "
           "       c.oid::int8 "
           "FROM pg_class c JOIN s ON s.nsp = c.relnamespace JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE c.relkind = 'v' "
           "  AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid) "
           "ORDER BY 1, 4";
}

/// Which of the names (from source_routines_sql: $1 kinds, $2 names) the target has, with its
/// definition as source_routines_sql makes it: a function or procedure by schema, name and
/// argument types, a view by any relation of its name (its definition only if it is a view).
/// Read with search_path pg_catalog too, so that argument types print as on the source.
const char* const k_target_routines =
    "SELECT x.name, CASE x.kind "
    "  WHEN 'view' THEN (SELECT 'CREATE VIEW ' || x.name || coalesce(' WITH (' || array_to_string(c.reloptions, ', ') "
    "                           || ')', '') || ' AS ' || pg_get_viewdef(c.oid) "
    "                    FROM pg_class c WHERE c.oid = to_regclass(x.name) AND c.relkind = 'v') "
    "  ELSE (SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "        WHERE quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || "
    "              oidvectortypes(p.proargtypes) || ')' = x.name) END "
    "FROM unnest($1::text[], $2::text[]) AS x(kind, name) WHERE CASE x.kind "
    "  WHEN 'view' THEN to_regclass(x.name) IS NOT NULL "
    "  ELSE EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "               WHERE quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || "
    "                     oidvectortypes(p.proargtypes) || ')' = x.name) END";

/// The functions, procedures and views of the compared tables' schemas that the target lacks.
std::vector<LaterObject> routines_missing(pg::Connection& source, pg::Connection& target, bool publication,
                                          const std::string& tables_param)
{
    source.exec("SET LOCAL search_path = pg_catalog");
    auto src = source.exec_params(source_routines_sql(publication), {tables_param});
    source.exec("SET LOCAL search_path TO DEFAULT");
    if (src.rows() == 0)
        return {};
    std::vector<std::string> kinds, names;
    for (int i = 0; i < src.rows(); ++i) {
        kinds.push_back(src.str(i, 0));
        names.push_back(src.str(i, 1));
    }
    target.exec("SET LOCAL search_path = pg_catalog");
    auto present = target.exec_params(k_target_routines, {pg::text_array(kinds), pg::text_array(names)});
    target.exec("SET LOCAL search_path TO DEFAULT");
    std::map<std::string, std::optional<std::string>> have; // name -> definition (none: not a view)
    for (int i = 0; i < present.rows(); ++i)
        have[present.str(i, 0)] = present.is_null(i, 1) ? std::nullopt : std::optional(present.str(i, 1));
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        const auto kind = src.str(i, 0), name = src.str(i, 1), def = src.str(i, 2);
        auto h = have.find(name);
        if (h != have.end() && (!h->second || *h->second == def))
            continue;
        LaterObject o;
        o.change = Change::create;
        o.name = name;
        if (h == have.end()) {
            o.what = kind + " " + name;
            o.steps = {def};
        } else {
            // Changed on the source (CREATE OR REPLACE): replaced on the target. A function's
            // definition says CREATE OR REPLACE already; a view's is made to. A change that
            // cannot be made in place (another return type, a view's columns dropped or renamed)
            // fails with PostgreSQL's error, listed.
            o.what = "definition of " + kind + " " + name;
            const std::string create_view = "CREATE VIEW ";
            o.steps = {def.rfind(create_view, 0) == 0 ? "CREATE OR REPLACE VIEW " + def.substr(create_view.size()) : def};
        }
        out.push_back(std::move(o));
    }
    return out;
}

/// The statement that makes policy `p` of table `tbl` (SQL text of its qualified name), as the
/// server in use deparses it: read with search_path pg_catalog, so that every name in the
/// expressions comes qualified and the two servers' texts compare.
std::string policy_statement_sql(const std::string& tbl)
{
    return "'CREATE POLICY ' || quote_ident(pol.polname) || ' ON ' || " + tbl +
           " || ' AS ' || CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END "
           "|| ' FOR ' || CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' "
           "                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END "
           "|| ' TO ' || CASE WHEN 0::oid = ANY (pol.polroles) THEN 'PUBLIC' ELSE (SELECT string_agg(quote_ident(r.rolname), "
           "   ', ' ORDER BY r.rolname) FROM pg_roles r WHERE r.oid = ANY (pol.polroles)) END "
           "|| coalesce(' USING (' || pg_get_expr(pol.polqual, pol.polrelid) || ')', '') "
           "|| coalesce(' WITH CHECK (' || pg_get_expr(pol.polwithcheck, pol.polrelid) || ')', '')";
}

/// The source tables' row-level security: display name, SQL name, enabled, forced, and per
/// policy (none: NULLs) its name, statement and the roles it names.
std::string source_row_security_sql(bool publication)
{
    return "SELECT n.nspname || '.' || t.relname, quote_ident(n.nspname) || '.' || quote_ident(t.relname), "
           "       t.relrowsecurity, t.relforcerowsecurity, pol.polname, " +
           policy_statement_sql("quote_ident(n.nspname) || '.' || quote_ident(t.relname)") +
           ", (SELECT string_agg(r.rolname, chr(1)) FROM pg_roles r WHERE r.oid = ANY (pol.polroles)) "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace n ON n.oid = t.relnamespace "
           "LEFT JOIN pg_policy pol ON pol.polrelid = t.oid "
           "ORDER BY 2, 5";
}

/// The same on the target for $1 (SQL names of tables it has), and whether row-level security
/// would apply there to the session's role once enabled (forced) as on the source: not a
/// superuser nor BYPASSRLS, and not the owner (or the owner, when forced).
std::string target_row_security_sql()
{
    return "SELECT x.tbl, t.relrowsecurity, t.relforcerowsecurity, pol.polname, " + policy_statement_sql("x.tbl") +
           ", EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)), "
           "  pg_has_role(t.relowner, 'USAGE'), current_user "
           "FROM unnest($1::text[]) x(tbl) JOIN pg_class t ON t.oid = to_regclass(x.tbl) "
           "LEFT JOIN pg_policy pol ON pol.polrelid = t.oid "
           "ORDER BY 1, 4";
}

/// One table's row-level security on one server.
struct RowSecurity {
    bool enabled = false, forced = false;
    std::map<std::string, std::string> policies; ///< name -> statement
    std::string summary() const
    {
        if (!enabled && !forced && policies.empty())
            return "off";
        return std::string(enabled ? "enabled" : "disabled") + (forced ? ", forced" : "") + ", " +
               (policies.empty() ? "no" : std::to_string(policies.size())) + " polic" +
               (policies.size() == 1 ? "y" : "ies");
    }
};

/// Per compared table whose row-level security on the target differs from the source's: the
/// statements that make it the same (policies dropped, replaced, created; then the switches).
/// Done by hand when a policy names a role the target lacks, or when it would subject pgshift's
/// own target role to row-level security.
std::vector<LaterObject> row_security_differs(pg::Connection& source, pg::Connection& target, bool publication,
                                              const std::string& tables_param, const std::set<std::string>& tables)
{
    struct Table {
        std::string display;
        RowSecurity source, target;
        bool target_exempt = false, target_owner = false;
        std::string target_role;
        std::map<std::string, std::vector<std::string>> roles; ///< the source's policy -> the roles it names
    };
    std::map<std::string, Table> by_table; // SQL name
    std::set<std::string> roles;
    source.exec("SET LOCAL search_path = pg_catalog");
    auto src = source.exec_params(source_row_security_sql(publication), {tables_param});
    source.exec("SET LOCAL search_path TO DEFAULT");
    for (int i = 0; i < src.rows(); ++i) {
        if (!tables.count(src.str(i, 1)))
            continue;
        auto& t = by_table[src.str(i, 1)];
        t.display = src.str(i, 0);
        t.source.enabled = src.get(i, 2) == "t";
        t.source.forced = src.get(i, 3) == "t";
        if (src.is_null(i, 4))
            continue;
        t.source.policies[src.str(i, 4)] = src.str(i, 5);
        if (src.is_null(i, 6))
            continue; // PUBLIC
        std::istringstream names(src.str(i, 6));
        for (std::string r; std::getline(names, r, '\x01');) {
            roles.insert(r);
            t.roles[src.str(i, 4)].push_back(r);
        }
    }
    if (by_table.empty())
        return {};
    target.exec("SET LOCAL search_path = pg_catalog");
    auto dst = target.exec_params(target_row_security_sql(), {pg::text_array({tables.begin(), tables.end()})});
    target.exec("SET LOCAL search_path TO DEFAULT");
    for (int i = 0; i < dst.rows(); ++i) {
        auto it = by_table.find(dst.str(i, 0));
        if (it == by_table.end())
            continue;
        auto& t = it->second;
        t.target.enabled = dst.get(i, 1) == "t";
        t.target.forced = dst.get(i, 2) == "t";
        t.target_exempt = dst.get(i, 5) == "t";
        t.target_owner = dst.get(i, 6) == "t";
        t.target_role = dst.str(i, 7);
        if (!dst.is_null(i, 3))
            t.target.policies[dst.str(i, 3)] = dst.str(i, 4);
    }
    std::set<std::string> missing_roles;
    if (!roles.empty()) {
        auto m = target.exec_params("SELECT r FROM unnest($1::text[]) r WHERE to_regrole(quote_ident(r)) IS NULL ORDER BY 1",
                                    {pg::text_array({roles.begin(), roles.end()})});
        for (int i = 0; i < m.rows(); ++i)
            missing_roles.insert(m.str(i, 0));
    }

    std::vector<LaterObject> out;
    for (const auto& [table_sql, t] : by_table) {
        const auto& want = t.source;
        const auto& have = t.target;
        std::vector<std::string> steps;
        std::set<std::string> lacking_roles;
        for (const auto& [name, statement] : have.policies)
            if (!want.policies.count(name))
                steps.push_back("DROP POLICY " + pg::quote_ident(name) + " ON " + table_sql);
        for (const auto& [name, statement] : want.policies) {
            auto h = have.policies.find(name);
            if (h != have.policies.end() && h->second == statement)
                continue;
            if (h != have.policies.end())
                steps.push_back("DROP POLICY " + pg::quote_ident(name) + " ON " + table_sql);
            steps.push_back(statement);
            if (auto r = t.roles.find(name); r != t.roles.end())
                for (const auto& role : r->second)
                    if (missing_roles.count(role))
                        lacking_roles.insert(role);
        }
        if (want.enabled != have.enabled)
            steps.push_back("ALTER TABLE " + table_sql + (want.enabled ? " ENABLE" : " DISABLE") + " ROW LEVEL SECURITY");
        if (want.forced != have.forced)
            steps.push_back("ALTER TABLE " + table_sql + (want.forced ? " FORCE" : " NO FORCE") + " ROW LEVEL SECURITY");
        if (steps.empty())
            continue;
        LaterObject o;
        o.table = t.display;
        o.change = Change::secure;
        o.constraint = true;
        o.what = "row-level security (on the source: " + want.summary() + "; on the target: " + have.summary() + ")";
        o.steps = std::move(steps);
        if (!lacking_roles.empty()) {
            std::string list;
            for (const auto& r : lacking_roles)
                list += (list.empty() ? "" : ", ") + r;
            o.by_hand = "its policies name role(s) the target lacks (pgshift copies no roles or passwords): create " +
                        list + " there";
        } else if (want.enabled && !t.target_exempt && (want.forced || !t.target_owner)) {
            o.by_hand = "row-level security would then apply to pgshift's role " + t.target_role +
                        " on the target, and apply must see every row (it runs with row_security=off and would "
                        "fail): ALTER ROLE " + pg::readable_ident(t.target_role) +
                        " BYPASSRLS (as a superuser)" + (want.forced ? "" : " or make it the table's owner");
        }
        out.push_back(std::move(o));
    }
    return out;
}

/// The partitions (at any depth) of the compared partitioned tables on the source: parent's
/// display name, the partition's display and SQL names, the statement that creates it, its
/// depth. Ordered by depth, so that a sub-partitioned partition comes before its own.
std::string source_partitions_sql(bool publication)
{
    return "SELECT pn.nspname || '.' || pc.relname, n.nspname || '.' || c.relname, "
           "       quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
           "       'CREATE TABLE ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' PARTITION OF ' || "
           "       quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) || ' ' || pg_get_expr(c.relpartbound, c.oid) || "
           "       CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END, "
           "       tree.level, quote_ident(tn.nspname) || '.' || quote_ident(t.relname) "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace tn ON tn.oid = t.relnamespace "
           "CROSS JOIN LATERAL pg_partition_tree(t.oid) tree "
           "JOIN pg_class c ON c.oid = tree.relid AND tree.level > 0 "
           "JOIN pg_namespace n ON n.oid = c.relnamespace "
           "JOIN pg_class pc ON pc.oid = tree.parentrelid "
           "JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
           "WHERE t.relkind = 'p' "
           "ORDER BY tree.level, 2";
}

/// The partitions of the compared partitioned tables that the target lacks (made on the source
/// later, as pg_partman and time-based schemes do ahead of the rows): apply would stop at the
/// first row routed there ("no partition of relation ... found for row"), and after a cutover
/// the application's rows for that range would be refused. Created with CREATE TABLE ...
/// PARTITION OF (a moment's ACCESS EXCLUSIVE lock on the parent, waited for 2 s at most); it
/// gets the parent's partitioned indexes and constraints as it is made.
std::vector<LaterObject> partitions_missing(pg::Connection& source, pg::Connection& target, bool publication,
                                            const std::string& tables_param, const std::set<std::string>& tables)
{
    auto src = source.exec_params(source_partitions_sql(publication), {tables_param});
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        names.push_back(src.str(i, 2));
    if (names.empty())
        return {};
    auto lacking = target.exec_params("SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL",
                                      {pg::text_array(names)});
    std::set<std::string> missing;
    for (int i = 0; i < lacking.rows(); ++i)
        missing.insert(lacking.str(i, 0));
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        if (!missing.count(src.str(i, 2)) || !tables.count(src.str(i, 5)))
            continue;
        LaterObject o;
        o.table = src.str(i, 0);
        o.what = "partition " + src.str(i, 1);
        o.name = src.str(i, 1);
        o.constraint = true; // the target refuses the rows of its range
        o.steps = {src.str(i, 3)};
        out.push_back(std::move(o));
    }
    return out;
}

/// The enum types the compared tables' columns use (directly, as an array's element or under a
/// domain): SQL name, display name, labels in their order (separated by chr(1)).
std::string source_enums_sql(bool publication)
{
    return "WITH cols AS (SELECT DISTINCT a.atttypid AS typ FROM " + tables_from(publication) +
           "  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped), "
           "types AS (SELECT typ FROM cols "
           "  UNION SELECT t.typelem FROM pg_type t JOIN cols ON cols.typ = t.oid WHERE t.typelem <> 0 "
           "  UNION SELECT t.typbasetype FROM pg_type t JOIN cols ON cols.typ = t.oid WHERE t.typtype = 'd') "
           "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname), n.nspname || '.' || t.typname, "
           "       string_agg(e.enumlabel, chr(1) ORDER BY e.enumsortorder) "
           "FROM types JOIN pg_type t ON t.oid = types.typ AND t.typtype = 'e' "
           "JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid "
           "GROUP BY 1, 2 ORDER BY 1";
}

std::vector<std::string> split_labels(const std::string& joined)
{
    std::vector<std::string> out;
    std::string::size_type from = 0;
    for (auto p = joined.find('\x01'); ; p = joined.find('\x01', from)) {
        out.push_back(joined.substr(from, p == std::string::npos ? std::string::npos : p - from));
        if (p == std::string::npos)
            break;
        from = p + 1;
    }
    return out;
}

/// The values of the compared tables' enum types that the target's same-named type lacks
/// (`ALTER TYPE ... ADD VALUE` on the source during the migration, a common deploy step): apply
/// would stop at the first row that uses one ("invalid input value for enum"), and after a
/// cutover the application's writes of it would fail. Each is added where the source has it
/// (AFTER the value before it, or BEFORE the first), so that the types sort alike. When the
/// target's type has values the source's lacks (a RENAME VALUE there?), or orders its values
/// otherwise, nothing is added: which value is which is the operator's to say.
std::vector<LaterObject> enum_values_missing(pg::Connection& source, pg::Connection& target, bool publication,
                                             const std::string& tables_param)
{
    auto src = source.exec_params(source_enums_sql(publication), {tables_param});
    if (src.rows() == 0)
        return {};
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        names.push_back(src.str(i, 0));
    auto dst = target.exec_params("SELECT x.t, (SELECT string_agg(e.enumlabel, chr(1) ORDER BY e.enumsortorder) "
                                  "             FROM pg_enum e WHERE e.enumtypid = to_regtype(x.t)) "
                                  "FROM unnest($1::text[]) x(t) WHERE to_regtype(x.t) IS NOT NULL",
                                  {pg::text_array(names)});
    std::map<std::string, std::vector<std::string>> on_target;
    for (int i = 0; i < dst.rows(); ++i)
        on_target[dst.str(i, 0)] = dst.is_null(i, 1) ? std::vector<std::string>{} : split_labels(dst.str(i, 1));
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        auto it = on_target.find(src.str(i, 0));
        if (it == on_target.end())
            continue; // the target lacks the type: the table's own problem
        const auto want = split_labels(src.str(i, 2));
        const auto& have = it->second;
        std::vector<std::string> extra, shared;
        for (const auto& l : have)
            (std::find(want.begin(), want.end(), l) == want.end() ? extra : shared).push_back(l);
        std::vector<std::string> in_source_order;
        for (const auto& l : want)
            if (std::find(have.begin(), have.end(), l) != have.end())
                in_source_order.push_back(l);
        const bool same_order = in_source_order == shared;
        std::set<std::string> present(have.begin(), have.end());
        std::vector<LaterObject> adds;
        for (std::size_t k = 0; k < want.size(); ++k) {
            if (present.count(want[k]))
                continue;
            std::string where;
            for (std::size_t j = k; j-- > 0;)
                if (present.count(want[j])) {
                    where = " AFTER " + pg::quote_literal(want[j]);
                    break;
                }
            if (where.empty())
                for (std::size_t j = k + 1; j < want.size(); ++j)
                    if (present.count(want[j])) {
                        where = " BEFORE " + pg::quote_literal(want[j]);
                        break;
                    }
            LaterObject o;
            o.change = Change::create;
            o.constraint = true; // the target refuses the value
            o.what = "value " + pg::quote_literal(want[k]) + " of enum type " + src.str(i, 1);
            o.name = src.str(i, 1);
            o.steps = {"ALTER TYPE " + src.str(i, 0) + " ADD VALUE IF NOT EXISTS " + pg::quote_literal(want[k]) + where};
            present.insert(want[k]);
            adds.push_back(std::move(o));
        }
        if (adds.empty())
            continue;
        if (!extra.empty() || !same_order) {
            std::string list;
            for (const auto& l : extra)
                list += (list.empty() ? "" : ", ") + pg::quote_literal(l);
            for (auto& o : adds)
                o.by_hand = extra.empty() ? "the target's type orders its values otherwise than the source's: make "
                                            "them the same there (" + o.steps.front() + ")"
                                          : "the target's type also has " + list + ", which the source's no longer "
                                            "has (renamed there, ALTER TYPE ... RENAME VALUE?): make them the same "
                                            "there (" + o.steps.front() + ")";
        }
        for (auto& o : adds)
            out.push_back(std::move(o));
    }
    return out;
}

/// Not one of pgshift's own (the cutover's write fence, whose function is in the schema pgshift).
constexpr const char* k_not_pgshift_trigger =
    "NOT EXISTS (SELECT 1 FROM pg_proc fp JOIN pg_namespace fn ON fn.oid = fp.pronamespace "
    "            WHERE fp.oid = g.tgfoid AND fn.nspname = 'pgshift')";

/// The compared tables' triggers (their own, not a partition's clone of its parent's, nor a
/// constraint's): table display and SQL names, trigger name, definition, enabled state. Read with
/// search_path pg_catalog, so that the function comes qualified.
std::string source_triggers_sql(bool publication)
{
    return "SELECT n.nspname || '.' || t.relname, quote_ident(n.nspname) || '.' || quote_ident(t.relname), "
           "       g.tgname, pg_get_triggerdef(g.oid), g.tgenabled::text "
           "FROM " + tables_from(publication) +
           "JOIN pg_namespace n ON n.oid = t.relnamespace "
           "JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal AND g.tgparentid = 0 "
           "WHERE " + std::string(k_not_pgshift_trigger) + " ORDER BY 2, 3";
}

/// The same on the target for $1 (SQL names of tables it has).
std::string target_triggers_sql()
{
    return std::string("SELECT x.tbl, g.tgname, pg_get_triggerdef(g.oid), g.tgenabled::text "
                       "FROM unnest($1::text[]) x(tbl) "
                       "JOIN pg_trigger g ON g.tgrelid = to_regclass(x.tbl) AND NOT g.tgisinternal AND g.tgparentid = 0 "
                       "WHERE ") +
           k_not_pgshift_trigger;
}

/// "ALTER TABLE t ENABLE ALWAYS TRIGGER g" for a trigger state other than the default ('O').
std::string trigger_state_statement(const std::string& table_sql, const std::string& name, const std::string& state)
{
    const char* how = state == "A" ? " ENABLE ALWAYS TRIGGER " : state == "R" ? " ENABLE REPLICA TRIGGER "
                      : state == "D" ? " DISABLE TRIGGER " : " ENABLE TRIGGER ";
    return "ALTER TABLE " + table_sql + how + pg::quote_ident(name);
}

/// Triggers made, changed or dropped on the compared source tables after they reached the
/// target (an audit trigger, an updated_at trigger of a deploy): after a cutover the new
/// primary would behave otherwise on the application's writes. Missing ones are created (with
/// their enabled state), changed ones dropped and created again, ones the source dropped
/// dropped. They do not fire during apply (session_replication_role = replica), unless
/// enabled ALWAYS or REPLICA, as on the source.
std::vector<LaterObject> triggers_differ(pg::Connection& source, pg::Connection& target, bool publication,
                                         const std::string& tables_param, const std::set<std::string>& tables,
                                         const std::map<std::string, std::string>& display)
{
    source.exec("SET LOCAL search_path = pg_catalog");
    auto src = source.exec_params(source_triggers_sql(publication), {tables_param});
    source.exec("SET LOCAL search_path TO DEFAULT");
    target.exec("SET LOCAL search_path = pg_catalog");
    auto dst = target.exec_params(target_triggers_sql(), {pg::text_array({tables.begin(), tables.end()})});
    target.exec("SET LOCAL search_path TO DEFAULT");
    struct Trigger {
        std::string def, state;
    };
    std::map<std::pair<std::string, std::string>, Trigger> want, have; // (table SQL, name)
    for (int i = 0; i < src.rows(); ++i)
        if (tables.count(src.str(i, 1)))
            want[{src.str(i, 1), src.str(i, 2)}] = {src.str(i, 3), src.str(i, 4)};
    for (int i = 0; i < dst.rows(); ++i)
        have[{dst.str(i, 0), dst.str(i, 1)}] = {dst.str(i, 2), dst.str(i, 3)};
    auto shown = [&](const std::string& table_sql) {
        auto d = display.find(table_sql);
        return d != display.end() ? d->second : table_sql;
    };
    std::vector<LaterObject> out;
    for (const auto& [key, t] : want) {
        const auto& [table_sql, name] = key;
        auto h = have.find(key);
        if (h != have.end() && h->second.def == t.def && h->second.state == t.state)
            continue;
        LaterObject o;
        o.table = shown(table_sql);
        o.name = name;
        const auto drop = "DROP TRIGGER IF EXISTS " + pg::quote_ident(name) + " ON " + table_sql;
        if (h == have.end()) {
            o.what = "trigger " + name;
            o.steps = {t.def};
        } else if (h->second.def != t.def) {
            o.what = "trigger " + name + " as the source now defines it";
            o.steps = {drop, t.def};
        } else {
            o.what = "trigger " + name + " in its state on the source";
        }
        if (t.state != "O" || (h != have.end() && h->second.state != t.state))
            o.steps.push_back(trigger_state_statement(table_sql, name, t.state));
        out.push_back(std::move(o));
    }
    for (const auto& [key, t] : have) {
        if (want.count(key))
            continue;
        LaterObject o;
        o.table = shown(key.first);
        o.name = key.second;
        o.what = "trigger " + key.second;
        o.change = Change::drop;
        o.steps = {"DROP TRIGGER IF EXISTS " + pg::quote_ident(key.second) + " ON " + key.first};
        out.push_back(std::move(o));
    }
    return out;
}

/// The published tables of `publication` whose name on the source differs from the one recorded
/// on the target for their relid (table_names.hpp): renamed, not written since.
std::vector<LaterObject> renamed_unwritten(pg::Connection& source, pg::Connection& target,
                                           const std::string& publication)
{
    if (target.exec("SELECT to_regclass('pgshift.table_names') IS NULL").get(0, 0) == "t")
        return {};
    auto recorded = target.exec_params("SELECT relid::text, nspname, relname, "
                                       "       to_regclass(quote_ident(nspname) || '.' || quote_ident(relname)) IS NOT NULL "
                                       "FROM pgshift.table_names WHERE slot = $1",
                                       {publication});
    if (recorded.rows() == 0)
        return {};
    std::map<std::string, int> by_relid;
    for (int i = 0; i < recorded.rows(); ++i)
        by_relid[recorded.str(i, 0)] = i;
    auto src = source.exec_params("SELECT c.oid::text, n.nspname, c.relname FROM pg_publication p "
                                  "JOIN pg_publication_rel pr ON pr.prpubid = p.oid JOIN pg_class c ON c.oid = pr.prrelid "
                                  "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1",
                                  {publication});
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        auto it = by_relid.find(src.str(i, 0));
        if (it == by_relid.end())
            continue;
        const int r = it->second;
        if (recorded.str(r, 1) == src.str(i, 1) && recorded.str(r, 2) == src.str(i, 2))
            continue;
        if (recorded.get(r, 3) != "t")
            continue; // the target lacks it under the old name too: the table watch's, or apply's error
        const auto statement = rename_statement({recorded.str(r, 1), recorded.str(r, 2)}, {src.str(i, 1), src.str(i, 2)});
        LaterObject o;
        o.change = Change::rename;
        o.what = "table " + recorded.str(r, 1) + "." + recorded.str(r, 2) + " (renamed " + src.str(i, 1) + "." +
                 src.str(i, 2) + " on the source)";
        o.name = src.str(i, 1) + "." + src.str(i, 2);
        o.by_hand = "it keeps its old name on the target until the table's next change arrives (with schema: copy "
                    "pgshift renames it then): write the table on the source, or rename it on the target: " +
                    statement;
        o.steps = {statement};
        out.push_back(std::move(o));
    }
    return out;
}

std::vector<LaterObject> compare(pg::Connection& source, pg::Connection& target, bool publication,
                                 const std::string& tables_param, std::chrono::milliseconds lock_timeout)
{
    ReadTransaction on_source(source, lock_timeout), on_target(target, lock_timeout);
    auto src_idx = source.exec_params(source_indexes_sql(publication), {tables_param});
    auto src_con = source.exec_params(source_constraints_sql(publication), {tables_param});
    auto src_col = source.exec_params(source_columns_sql(publication), {tables_param});
    std::set<std::string> tables;
    std::map<std::string, std::string> display; // table sql -> display form
    for (int i = 0; i < src_col.rows(); ++i) {
        tables.insert(src_col.str(i, 1));
        display[src_col.str(i, 1)] = src_col.str(i, 0);
    }
    // Only tables the target has (one that has not joined yet is the table watch's).
    auto present = target.exec_params("SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL",
                                      {pg::text_array({tables.begin(), tables.end()})});
    tables.clear();
    for (int i = 0; i < present.rows(); ++i)
        tables.insert(present.str(i, 0));
    if (tables.empty())
        return {};
    const auto array = pg::text_array({tables.begin(), tables.end()});

    struct TargetIndex {
        bool valid = false, building = false;
    };
    std::map<std::pair<std::string, std::string>, TargetIndex> by_name; // (table sql, index name)
    std::set<std::pair<std::string, std::string>> shapes;               // (table sql, valid index shape)
    auto dst_idx = target.exec_params(target_indexes_sql(), {array});
    for (int i = 0; i < dst_idx.rows(); ++i) {
        bool valid = dst_idx.get(i, 3) == "t";
        by_name[{dst_idx.str(i, 0), dst_idx.str(i, 1)}] = {valid, dst_idx.get(i, 4) == "t"};
        if (valid)
            shapes.insert({dst_idx.str(i, 0), dst_idx.str(i, 2)});
    }
    std::set<std::pair<std::string, std::string>> con_names, con_defs;
    auto dst_con = target.exec_params(k_target_constraints, {array});
    for (int i = 0; i < dst_con.rows(); ++i) {
        con_names.insert({dst_con.str(i, 0), dst_con.str(i, 1)});
        con_defs.insert({dst_con.str(i, 0), dst_con.str(i, 2)});
    }

    std::vector<LaterObject> out = dropped_on_source(target, array, display, src_idx, src_con, src_col, dst_idx, dst_con);
    for (int i = 0; i < src_idx.rows(); ++i) {
        const auto table_sql = src_idx.str(i, 1), name = src_idx.str(i, 2), index_sql = src_idx.str(i, 3);
        const auto def = src_idx.str(i, 4), contype = src_idx.str(i, 6), conname = src_idx.str(i, 7);
        const auto condef = src_idx.str(i, 8);
        // A constraint is there when the target has it (its index alone does not make it one);
        // an index, when the target has one of the same definition, or one of the same name
        // (another definition under the source's name is the operator's choice).
        auto it = by_name.find({table_sql, name});
        const bool same_name_valid = it != by_name.end() && it->second.valid;
        if (!tables.count(table_sql))
            continue;
        if (contype.empty() ? shapes.count({table_sql, src_idx.str(i, 5)}) || same_name_valid
                            : con_names.count({table_sql, conname}) || con_defs.count({table_sql, condef}))
            continue;
        LaterObject o;
        o.table = src_idx.str(i, 0);
        o.constraint = !contype.empty() || def.rfind("CREATE UNIQUE", 0) == 0;
        if (it != by_name.end() && !it->second.valid) {
            o.building = it->second.building;
            o.invalid_index = index_sql;
        }
        const bool partitioned = src_idx.get(i, 9) == "p";
        if (contype.empty()) {
            o.what = std::string(def.rfind("CREATE UNIQUE", 0) == 0 ? "unique index " : "index ") + name;
            if (partitioned)
                o.by_hand = "PostgreSQL cannot build an index on a partitioned table CONCURRENTLY; build it on the "
                            "target when apply may wait for it: " +
                            def;
            else
                o.steps = {concurrently(def)};
        } else {
            o.what = std::string(constraint_kind(contype[0])) + " " + conname;
            const auto add = "ALTER TABLE " + table_sql + " ADD CONSTRAINT " + pg::quote_ident(conname);
            if (partitioned || contype == "x") {
                o.by_hand = std::string(partitioned ? "PostgreSQL cannot build it on a partitioned table CONCURRENTLY"
                                                    : "its index builds under an ACCESS EXCLUSIVE lock") +
                            "; add it on the target when apply may wait for it: " + add + " " + condef;
            } else {
                // Its index first (unless an earlier look built it and the ADD then failed).
                if (!same_name_valid)
                    o.steps.push_back(concurrently(def));
                o.steps.push_back(add + (contype == "p" ? " PRIMARY KEY" : " UNIQUE") + " USING INDEX " +
                                  pg::quote_ident(name) + ends_with_deferrable(condef));
            }
        }
        const bool unreadable = std::any_of(o.steps.begin(), o.steps.end(), [](const auto& s) { return s.empty(); });
        if (!o.by_hand.empty() || (!o.steps.empty() && !unreadable)) // (a definition of an unknown form: skipped)
            out.push_back(std::move(o));
    }
    for (int i = 0; i < src_con.rows(); ++i) {
        const auto table_sql = src_con.str(i, 1), name = src_con.str(i, 2), condef = src_con.str(i, 4);
        if (!tables.count(table_sql) || con_names.count({table_sql, name}) || con_defs.count({table_sql, condef}))
            continue;
        LaterObject o;
        o.table = src_con.str(i, 0);
        o.constraint = true;
        o.what = std::string(constraint_kind(src_con.get(i, 3)[0])) + " " + name;
        // Added NOT VALID (a moment's lock, no scan), then validated (a scan that does not block
        // writes); one the source has not validated either stays NOT VALID.
        const bool validated = src_con.get(i, 5) == "t";
        const auto add = "ALTER TABLE " + table_sql + " ADD CONSTRAINT " + pg::quote_ident(name) + " " + condef;
        o.steps = {validated ? add + " NOT VALID" : add};
        if (validated)
            o.steps.push_back("ALTER TABLE " + table_sql + " VALIDATE CONSTRAINT " + pg::quote_ident(name));
        out.push_back(std::move(o));
    }
    for (auto& o : privileges_missing(source, target, publication, tables_param))
        out.push_back(std::move(o));
    for (auto& o : routines_missing(source, target, publication, tables_param))
        out.push_back(std::move(o));
    for (auto& o : partitions_missing(source, target, publication, tables_param, tables))
        out.push_back(std::move(o));
    for (auto& o : enum_values_missing(source, target, publication, tables_param))
        out.push_back(std::move(o));
    for (auto& o : triggers_differ(source, target, publication, tables_param, tables, display))
        out.push_back(std::move(o));
    for (auto& o : row_security_differs(source, target, publication, tables_param, tables))
        out.push_back(std::move(o));
    if (publication)
        for (auto& o : renamed_unwritten(source, target, tables_param))
            out.push_back(std::move(o));
    std::stable_sort(out.begin(), out.end(),
                     [](const LaterObject& a, const LaterObject& b) { return order_of(a) < order_of(b); });
    return out;
}

} // namespace

std::vector<LaterObject> schema_differences(pg::Connection& source, pg::Connection& target,
                                           const std::string& publication, std::chrono::milliseconds lock_timeout)
{
    return compare(source, target, true, publication, lock_timeout);
}

std::vector<LaterObject> schema_differences(pg::Connection& source, pg::Connection& target,
                                           const std::vector<std::string>& tables,
                                           std::chrono::milliseconds lock_timeout)
{
    if (tables.empty())
        return {};
    return compare(source, target, false, pg::text_array(tables), lock_timeout);
}

void change_target(pg::Connection& target, const LaterObject& o)
{
    if (o.change == Change::secure) {
        // All at once: no moment with the switch on and a policy missing, or the reverse.
        try {
            target.exec("BEGIN");
            target.exec("SET LOCAL lock_timeout = '2s'");
            for (const auto& step : o.steps)
                target.exec(step);
            target.exec("COMMIT");
        } catch (const pg::PgError&) {
            if (target.is_ok())
                target.exec("ROLLBACK");
            throw;
        }
        return;
    }
    if (!o.invalid_index.empty())
        target.exec("DROP INDEX CONCURRENTLY IF EXISTS " + o.invalid_index);
    for (const auto& step : o.steps) {
        const bool concurrent = step.find(" INDEX CONCURRENTLY ") != std::string::npos;
        try {
            if (concurrent) {
                target.exec(step);
            } else {
                // A moment's strong lock: waited for 2 s at most, so apply never queues behind it.
                target.exec("BEGIN");
                target.exec("SET LOCAL lock_timeout = '2s'");
                // A function's body may use what the target lacks yet (a managed provider's
                // schema, say): created as pg_restore does, checked when it is called.
                if (o.change == Change::create)
                    target.exec("SET LOCAL check_function_bodies = off");
                target.exec(step);
                target.exec("COMMIT");
            }
        } catch (const pg::PgError&) {
            if (!concurrent && target.is_ok())
                target.exec("ROLLBACK");
            throw;
        }
    }
}

} // namespace pgshift::apply
