// Who may do what on the target's replicated tables: roles' privileges and row-level security
// (see later_objects.hpp for why each is compared and how it is made the same).
#include "later_kinds.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace pgshift::apply::later {

namespace {

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
           "  SELECT t.oid, 'SCHEMA', t.relnamespace, quote_ident(t.nspname), '{USAGE,CREATE}' FROM t) "
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

} // namespace

/// One LaterObject per role: the privileges it holds on the source's compared tables (their
/// sequences and schemas) and lacks on the target, with the GRANT statements; a role the target
/// lacks is done by hand. pgshift's own source role is left out when the target has no role of
/// its name (the roles of a migration often differ between the servers).
std::vector<LaterObject> privileges_missing(const Scope& s)
{
    auto src = s.source.exec_params(source_privileges_sql(s.publication), {s.tables_param});
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
    auto dst = s.target.exec_params(k_target_privileges_missing,
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

namespace {

/// The owners of the source's compared tables (and their partitions), and of the views,
/// functions and procedures of their schemas (not an extension's), unless a superuser: kind
/// (TABLE, VIEW, FUNCTION, PROCEDURE), SQL name (a routine's with its argument types, read with
/// search_path pg_catalog), owner.
std::string source_owners_sql(bool publication)
{
    return "WITH p AS (SELECT t.oid, t.relnamespace FROM " + tables_from(publication) +
           "), ext AS (SELECT objid, classid FROM pg_depend WHERE deptype = 'e') "
           "SELECT 'TABLE', quote_ident(n.nspname) || '.' || quote_ident(c.relname), r.rolname "
           "FROM p JOIN pg_class c ON c.oid = p.oid OR c.oid IN (SELECT relid FROM pg_partition_tree(p.oid)) "
           "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner WHERE NOT r.rolsuper "
           "UNION "
           "SELECT 'VIEW', quote_ident(n.nspname) || '.' || quote_ident(c.relname), r.rolname FROM pg_class c "
           "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner "
           "WHERE c.relkind = 'v' AND c.relnamespace IN (SELECT relnamespace FROM p) AND NOT r.rolsuper "
           "  AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid) "
           "UNION "
           "SELECT CASE f.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, "
           "       quote_ident(n.nspname) || '.' || quote_ident(f.proname) || '(' || oidvectortypes(f.proargtypes) || ')', "
           "       r.rolname FROM pg_proc f "
           "JOIN pg_namespace n ON n.oid = f.pronamespace JOIN pg_roles r ON r.oid = f.proowner "
           "WHERE f.prokind IN ('f', 'p') AND f.pronamespace IN (SELECT relnamespace FROM p) AND NOT r.rolsuper "
           "  AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = f.oid) "
           "ORDER BY 1, 2";
}

/// Of source_owners_sql()'s rows ($1..$3: kind, name, owner), those the target has under another
/// owner: kind, name, owner on the source, owner on the target, whether that role exists on the
/// target, whether the session's role has its privileges there (may give it an object and keeps
/// its own rights on it), the session's role.
const char* const k_target_owners_differ =
    "SELECT x.kind, x.name, x.owner, o.rolname, to_regrole(quote_ident(x.owner)) IS NOT NULL, "
    "       coalesce(pg_has_role(current_user, to_regrole(quote_ident(x.owner)), 'USAGE'), false), current_user "
    "FROM unnest($1::text[], $2::text[], $3::text[]) AS x(kind, name, owner) "
    "JOIN pg_roles o ON o.oid = CASE WHEN x.kind IN ('TABLE', 'VIEW') "
    "  THEN (SELECT relowner FROM pg_class WHERE oid = to_regclass(x.name)) "
    "  ELSE (SELECT proowner FROM pg_proc WHERE oid = to_regprocedure(x.name)) END "
    "WHERE o.rolname <> x.owner ORDER BY 1, 2";

} // namespace

/// The compared tables, partitions, views and routines the target has under another owner than
/// the source (not a superuser there): schema: copy and the follower create them owned by
/// pgshift's target role, so after a cutover the application's role could not alter or drop
/// them (its next migration fails: "must be owner of table"), and views and SECURITY DEFINER
/// functions would run with pgshift's role's rights (a view owned by a role that bypasses
/// row-level security shows every row). Made the same with ALTER ... OWNER TO when the role
/// exists on the target and pgshift's target role has its privileges (a superuser, or a member:
/// it keeps its own rights on the object then); otherwise done by hand, with what it takes.
std::vector<LaterObject> owners_differ(const Scope& s)
{
    s.source.exec("SET LOCAL search_path = pg_catalog");
    auto src = s.source.exec_params(source_owners_sql(s.publication), {s.tables_param});
    s.source.exec("SET LOCAL search_path TO DEFAULT");
    if (src.rows() == 0)
        return {};
    std::vector<std::string> kinds, names, owners;
    for (int i = 0; i < src.rows(); ++i) {
        kinds.push_back(src.str(i, 0));
        names.push_back(src.str(i, 1));
        owners.push_back(src.str(i, 2));
    }
    auto dst = s.target.exec_params(k_target_owners_differ,
                                    {pg::text_array(kinds), pg::text_array(names), pg::text_array(owners)});
    std::vector<LaterObject> out;
    for (int i = 0; i < dst.rows(); ++i) {
        std::string kind = dst.str(i, 0);
        const auto name = dst.str(i, 1), owner = dst.str(i, 2), now = dst.str(i, 3), self = dst.str(i, 6);
        LaterObject o;
        o.change = Change::owner;
        o.name = owner;
        std::transform(kind.begin(), kind.end(), kind.begin(), [](unsigned char c) { return std::tolower(c); });
        o.what = "owner of " + kind + " " + name + " (" + owner + " on the source, " + now + " on the target)";
        o.steps = {"ALTER " + dst.str(i, 0) + " " + name + " OWNER TO " + pg::quote_ident(owner)};
        if (dst.get(i, 4) != "t")
            o.by_hand = "role " + owner + " does not exist on the target (pgshift copies no roles or passwords): "
                        "create it there";
        else if (dst.get(i, 5) != "t")
            o.by_hand = "pgshift's target role " + self + " is not a member of " + owner +
                        ", so it may not give it the object (and would lose its own rights on it): GRANT " +
                        pg::quote_ident(owner) + " TO " + pg::quote_ident(self) +
                        " on the target, then pgshift changes it; or change it there: " + o.steps.front();
        out.push_back(std::move(o));
    }
    return out;
}

namespace {

/// EXECUTE on the functions and procedures of the compared tables' schemas (not an extension's)
/// on the source: kind, SQL name (with argument types, read with search_path pg_catalog),
/// whether PUBLIC may call it, and the other roles granted it (not superusers, not the owner),
/// separated by chr(1).
std::string source_routine_acl_sql(bool publication)
{
    return "WITH p AS (SELECT DISTINCT t.relnamespace FROM " + tables_from(publication) +
           "), f AS (SELECT f.* FROM pg_proc f WHERE f.prokind IN ('f', 'p') "
           "  AND f.pronamespace IN (SELECT relnamespace FROM p) "
           "  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid "
           "                  AND d.deptype = 'e')) "
           "SELECT CASE f.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, "
           "       quote_ident(n.nspname) || '.' || quote_ident(f.proname) || '(' || oidvectortypes(f.proargtypes) || ')', "
           "       EXISTS (SELECT 1 FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a "
           "               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'), "
           "       (SELECT string_agg(r.rolname, chr(1) ORDER BY r.rolname) "
           "          FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a JOIN pg_roles r ON r.oid = a.grantee "
           "         WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner AND NOT r.rolsuper) "
           "FROM f JOIN pg_namespace n ON n.oid = f.pronamespace ORDER BY 2";
}

/// The same routines on the target ($1 SQL names): whether PUBLIC may call each.
const char* const k_target_routine_public =
    "SELECT x.name, EXISTS (SELECT 1 FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a "
    "                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') "
    "FROM unnest($1::text[]) AS x(name) JOIN pg_proc f ON f.oid = to_regprocedure(x.name)";

} // namespace

/// Who may call the functions and procedures of the compared tables' schemas: PostgreSQL lets
/// PUBLIC execute a new function, and schema: copy and the follower create them anew, so a
/// function the source keeps from PUBLIC (REVOKE EXECUTE ... FROM PUBLIC: an administrative
/// SECURITY DEFINER function, one a REST layer must not expose to anonymous roles) could be
/// called by every role on the new primary. Made the same for PUBLIC either way (a revoke is
/// Change::revoke, a grant Change::grant), and the roles granted EXECUTE on the source that lack
/// it on the target are granted it, one object per role (a role the target lacks by hand).
std::vector<LaterObject> routine_privileges_differ(const Scope& s)
{
    s.source.exec("SET LOCAL search_path = pg_catalog");
    auto src = s.source.exec_params(source_routine_acl_sql(s.publication), {s.tables_param});
    s.source.exec("SET LOCAL search_path TO DEFAULT");
    if (src.rows() == 0)
        return {};
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        names.push_back(src.str(i, 1));
    auto dst = s.target.exec_params(k_target_routine_public, {pg::text_array(names)});
    std::map<std::string, bool> target_public;
    for (int i = 0; i < dst.rows(); ++i)
        target_public[dst.str(i, 0)] = dst.get(i, 1) == "t";
    std::vector<LaterObject> out;
    std::vector<std::string> roles, kinds, objects;
    for (int i = 0; i < src.rows(); ++i) {
        const auto kind = src.str(i, 0), name = src.str(i, 1);
        auto t = target_public.find(name);
        if (t == target_public.end())
            continue; // not there yet: routines_missing's
        const bool source_public = src.get(i, 2) == "t";
        std::string lower = kind;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        if (t->second != source_public) {
            LaterObject o;
            o.change = source_public ? Change::grant : Change::revoke;
            o.name = "PUBLIC";
            o.what = source_public ? "privileges of PUBLIC (EXECUTE on " + lower + " " + name + ")"
                                   : "EXECUTE on " + lower + " " + name + " for PUBLIC";
            o.steps = {std::string(source_public ? "GRANT" : "REVOKE") + " EXECUTE ON " + kind + " " + name +
                       (source_public ? " TO PUBLIC" : " FROM PUBLIC")};
            out.push_back(std::move(o));
        }
        if (!src.is_null(i, 3))
            for (const auto& role : split_chr1(src.str(i, 3))) {
                roles.push_back(role);
                kinds.push_back(kind);
                objects.push_back(name);
            }
    }
    if (roles.empty())
        return out;
    auto lacking = s.target.exec_params(
        "SELECT x.role, x.kind, x.obj, to_regrole(quote_ident(x.role)) IS NULL "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS x(role, kind, obj) "
        "WHERE to_regrole(quote_ident(x.role)) IS NULL "
        "   OR NOT has_function_privilege(to_regrole(quote_ident(x.role)), to_regprocedure(x.obj), 'EXECUTE') "
        "ORDER BY 1, 3",
        {pg::text_array(roles), pg::text_array(kinds), pg::text_array(objects)});
    std::map<std::string, LaterObject> by_role;
    for (int i = 0; i < lacking.rows(); ++i) {
        const auto role = lacking.str(i, 0), kind = lacking.str(i, 1), name = lacking.str(i, 2);
        auto& o = by_role[role];
        o.change = Change::grant;
        o.name = role;
        if (lacking.get(i, 3) == "t")
            o.by_hand = "role " + role + " does not exist on the target (pgshift copies no roles or passwords): "
                        "create it there";
        o.steps.push_back("GRANT EXECUTE ON " + kind + " " + name + " TO " + pg::quote_ident(role));
    }
    for (auto& [role, o] : by_role) {
        o.what = "privileges of role " + role + " (EXECUTE on " + std::to_string(o.steps.size()) + " routine" +
                 (o.steps.size() == 1 ? "" : "s") + ")";
        out.push_back(std::move(o));
    }
    return out;
}

namespace {

/// Default privileges (ALTER DEFAULT PRIVILEGES) on the source that apply in the compared
/// tables' schemas: per entry, the role whose new objects they govern, the schema ('' for every
/// schema: the entry then replaces PostgreSQL's built-in defaults), the kind of object, and what
/// other roles get ("grantee=PRIVILEGE", PUBLIC by that name, separated by chr(1)).
std::string source_default_acl_sql(bool publication)
{
    return "WITH s AS (SELECT DISTINCT t.relnamespace AS nsp FROM " + tables_from(publication) +
           ") SELECT r.rolname, coalesce(n.nspname, ''), d.defaclobjtype::text, "
           "  coalesce((SELECT string_agg(coalesce(g.rolname, 'PUBLIC') || '=' || a.privilege_type, chr(1) ORDER BY 1) "
           "     FROM aclexplode(d.defaclacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee "
           "     WHERE a.grantee <> d.defaclrole), '') "
           "FROM pg_default_acl d JOIN pg_roles r ON r.oid = d.defaclrole "
           "LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace "
           "WHERE d.defaclnamespace = 0 OR d.defaclnamespace IN (SELECT nsp FROM s) ORDER BY 1, 2, 3";
}

/// The same entries on the target ($1 role, $2 schema, $3 kind): whether the role exists there,
/// whether the session's role has its privileges (ALTER DEFAULT PRIVILEGES FOR ROLE needs them),
/// and the grants as above (for every schema, PostgreSQL's built-in defaults when the target has
/// no entry), the session's role.
const char* const k_target_default_acl =
    "SELECT x.role, x.nsp, x.kind, r.oid IS NOT NULL, coalesce(pg_has_role(current_user, r.oid, 'USAGE'), false), "
    "  coalesce((SELECT string_agg(coalesce(g.rolname, 'PUBLIC') || '=' || a.privilege_type, chr(1) ORDER BY 1) "
    "     FROM aclexplode(coalesce((SELECT d.defaclacl FROM pg_default_acl d WHERE d.defaclrole = r.oid "
    "                                AND d.defaclnamespace = coalesce(to_regnamespace(quote_ident(nullif(x.nsp, '')))::oid, 0) "
    "                                AND d.defaclobjtype = x.kind::\"char\"), "
    "                               CASE WHEN x.nsp = '' THEN acldefault(x.kind::\"char\", r.oid) END)) a "
    "     LEFT JOIN pg_roles g ON g.oid = a.grantee WHERE a.grantee <> r.oid), ''), current_user "
    "FROM unnest($1::text[], $2::text[], $3::text[]) AS x(role, nsp, kind) "
    "LEFT JOIN pg_roles r ON r.oid = to_regrole(quote_ident(x.role)) "
    "WHERE x.nsp = '' OR to_regnamespace(quote_ident(x.nsp)) IS NOT NULL";

const char* object_kind_keyword(const std::string& kind)
{
    return kind == "r" ? "TABLES" : kind == "S" ? "SEQUENCES" : kind == "f" ? "FUNCTIONS" : kind == "T" ? "TYPES" : "SCHEMAS";
}

} // namespace

/// Default privileges: the grants that objects created from now on get. After a cutover the
/// application's migrations create tables on the new primary, and where the source gives them
/// to other roles by default (Supabase's ALTER DEFAULT PRIVILEGES ... GRANT ... TO anon,
/// authenticated), those roles would be refused on every new table there; a default revoked on
/// the source (EXECUTE on new functions from PUBLIC) would be granted. Per entry of the source
/// (a role, a schema of the tables or every schema, a kind of object), what the target's
/// defaults give more or less is granted or revoked the same, when the role exists there and
/// pgshift's target role has its privileges; a grantee the target lacks is by hand.
std::vector<LaterObject> default_privileges_differ(const Scope& s)
{
    auto src = s.source.exec_params(source_default_acl_sql(s.publication), {s.tables_param});
    if (src.rows() == 0)
        return {};
    std::vector<std::string> roles, schemas, kinds;
    std::map<std::tuple<std::string, std::string, std::string>, std::string> want;
    for (int i = 0; i < src.rows(); ++i) {
        roles.push_back(src.str(i, 0));
        schemas.push_back(src.str(i, 1));
        kinds.push_back(src.str(i, 2));
        want[{src.str(i, 0), src.str(i, 1), src.str(i, 2)}] = src.str(i, 3);
    }
    auto dst = s.target.exec_params(k_target_default_acl,
                                    {pg::text_array(roles), pg::text_array(schemas), pg::text_array(kinds)});
    std::vector<LaterObject> out;
    for (int i = 0; i < dst.rows(); ++i) {
        const auto role = dst.str(i, 0), schema = dst.str(i, 1), kind = dst.str(i, 2), self = dst.str(i, 6);
        const auto wanted = split_chr1(want[{role, schema, kind}]);
        const auto have = split_chr1(dst.str(i, 5));
        // grantee -> privileges to grant / to revoke
        std::map<std::string, std::vector<std::string>> grant, revoke;
        for (const auto& g : wanted)
            if (std::find(have.begin(), have.end(), g) == have.end())
                grant[g.substr(0, g.rfind('='))].push_back(g.substr(g.rfind('=') + 1));
        for (const auto& g : have)
            if (std::find(wanted.begin(), wanted.end(), g) == wanted.end())
                revoke[g.substr(0, g.rfind('='))].push_back(g.substr(g.rfind('=') + 1));
        if (grant.empty() && revoke.empty())
            continue;
        const std::string prefix = "ALTER DEFAULT PRIVILEGES FOR ROLE " + pg::quote_ident(role) +
                                   (schema.empty() ? "" : " IN SCHEMA " + pg::quote_ident(schema)) + " ";
        const std::string on = std::string(" ON ") + object_kind_keyword(kind);
        LaterObject o;
        o.change = Change::defaults;
        o.name = role;
        std::string objects = object_kind_keyword(kind);
        std::transform(objects.begin(), objects.end(), objects.begin(), [](unsigned char c) { return std::tolower(c); });
        o.what = "default privileges of role " + role + " on new " + objects +
                 (schema.empty() ? " (every schema)" : " in schema " + schema);
        auto who = [](const std::string& g) { return g == "PUBLIC" ? g : pg::quote_ident(g); };
        auto list = [](const std::vector<std::string>& privs) {
            std::string l;
            for (const auto& p : privs)
                l += (l.empty() ? "" : ", ") + p;
            return l;
        };
        std::vector<std::string> missing_grantees;
        for (const auto& [g, privs] : grant) {
            o.steps.push_back(prefix + "GRANT " + list(privs) + on + " TO " + who(g));
            if (g != "PUBLIC")
                missing_grantees.push_back(g);
        }
        for (const auto& [g, privs] : revoke)
            o.steps.push_back(prefix + "REVOKE " + list(privs) + on + " FROM " + who(g));
        if (dst.get(i, 3) != "t")
            o.by_hand = "role " + role + " does not exist on the target (pgshift copies no roles or passwords): "
                        "create it there";
        else if (dst.get(i, 4) != "t")
            o.by_hand = "pgshift's target role " + self + " is not a member of " + role +
                        ", so it may not change that role's default privileges: GRANT " + pg::quote_ident(role) +
                        " TO " + pg::quote_ident(self) + " on the target, then pgshift changes them; or run there: " +
                        o.steps.front();
        if (o.by_hand.empty() && !missing_grantees.empty()) {
            auto exist = s.target.exec_params("SELECT g FROM unnest($1::text[]) g WHERE to_regrole(quote_ident(g)) IS NULL",
                                              {pg::text_array(missing_grantees)});
            if (exist.rows() > 0)
                o.by_hand = "role " + exist.str(0, 0) + " does not exist on the target (pgshift copies no roles or "
                            "passwords): create it there";
        }
        out.push_back(std::move(o));
    }
    return out;
}

namespace {

/// The statement that makes policy `pol` of table `tbl` (SQL text of its qualified name), as the
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

} // namespace

/// Per compared table whose row-level security on the target differs from the source's: the
/// statements that make it the same (policies dropped, replaced, created; then the switches).
/// Done by hand when a policy names a role the target lacks, or when it would subject pgshift's
/// own target role to row-level security.
std::vector<LaterObject> row_security_differs(const Scope& s)
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
    s.source.exec("SET LOCAL search_path = pg_catalog");
    auto src = s.source.exec_params(source_row_security_sql(s.publication), {s.tables_param});
    s.source.exec("SET LOCAL search_path TO DEFAULT");
    for (int i = 0; i < src.rows(); ++i) {
        if (!s.tables.count(src.str(i, 1)))
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
        for (auto& r : split_chr1(src.str(i, 6))) {
            roles.insert(r);
            t.roles[src.str(i, 4)].push_back(r);
        }
    }
    if (by_table.empty())
        return {};
    s.target.exec("SET LOCAL search_path = pg_catalog");
    auto dst = s.target.exec_params(target_row_security_sql(), {pg::text_array({s.tables.begin(), s.tables.end()})});
    s.target.exec("SET LOCAL search_path TO DEFAULT");
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
        auto m = s.target.exec_params("SELECT r FROM unnest($1::text[]) r WHERE to_regrole(quote_ident(r)) IS NULL ORDER BY 1",
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

} // namespace pgshift::apply::later
