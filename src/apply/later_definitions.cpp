// What the replicated tables are defined with besides their indexes and constraints: functions,
// procedures and views of their schemas, partitions, enum values, triggers, tables renamed on
// the source, and the planner statistics the target's tables lack (see later_objects.hpp for why
// each is compared and how it is made the same).
#include "later_kinds.hpp"

#include "pgshift/apply/table_names.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace pgshift::apply::later {

namespace {

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

} // namespace

/// The functions, procedures and views of the compared tables' schemas that the target lacks.
std::vector<LaterObject> routines_missing(const Scope& s)
{
    s.source.exec("SET LOCAL search_path = pg_catalog");
    auto src = s.source.exec_params(source_routines_sql(s.publication), {s.tables_param});
    s.source.exec("SET LOCAL search_path TO DEFAULT");
    if (src.rows() == 0)
        return {};
    std::vector<std::string> kinds, names;
    for (int i = 0; i < src.rows(); ++i) {
        kinds.push_back(src.str(i, 0));
        names.push_back(src.str(i, 1));
    }
    s.target.exec("SET LOCAL search_path = pg_catalog");
    auto present = s.target.exec_params(k_target_routines, {pg::text_array(kinds), pg::text_array(names)});
    s.target.exec("SET LOCAL search_path TO DEFAULT");
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

namespace {

/// The partitions (at any depth) of the compared partitioned tables on the source: parent's
/// display name, the partition's display and SQL names, the statement that creates it, its
/// depth, the root's SQL name, its bound, the parent's SQL name. Ordered by depth, so that a
/// sub-partitioned partition comes before its own.
std::string source_partitions_sql(bool publication)
{
    return "SELECT pn.nspname || '.' || pc.relname, n.nspname || '.' || c.relname, "
           "       quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
           "       'CREATE TABLE ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' PARTITION OF ' || "
           "       quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) || ' ' || pg_get_expr(c.relpartbound, c.oid) || "
           "       CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END, "
           "       tree.level, quote_ident(tn.nspname) || '.' || quote_ident(t.relname), "
           "       pg_get_expr(c.relpartbound, c.oid), quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) "
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

} // namespace

/// The partitions of the compared partitioned tables that the target lacks (made on the source
/// later, as pg_partman and time-based schemes do ahead of the rows): apply would stop at the
/// first row routed there ("no partition of relation ... found for row"), and after a cutover
/// the application's rows for that range would be refused. Created with CREATE TABLE ...
/// PARTITION OF (a moment's ACCESS EXCLUSIVE lock on the parent, waited for 2 s at most); it
/// gets the parent's partitioned indexes and constraints as it is made.
std::vector<LaterObject> partitions_missing(const Scope& s)
{
    auto src = s.source.exec_params(source_partitions_sql(s.publication), {s.tables_param});
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        names.push_back(src.str(i, 2));
    if (names.empty())
        return {};
    auto lacking = s.target.exec_params("SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL",
                                        {pg::text_array(names)});
    std::set<std::string> missing;
    for (int i = 0; i < lacking.rows(); ++i)
        missing.insert(lacking.str(i, 0));
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        if (!missing.count(src.str(i, 2)) || !s.tables.count(src.str(i, 5)))
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

namespace {

/// A partition as one server has it: its parent's SQL name and its bound.
struct PartitionPlace {
    std::string parent, bound;
    bool operator==(const PartitionPlace&) const = default;
};

} // namespace

/// The partitions the target's compared partitioned tables have and the source's no longer do:
/// a retention job (pg_partman, a cron's DROP TABLE) drops or detaches old partitions on the
/// source, logical decoding carries no DDL, and after a cutover the new primary would show every
/// row the source dropped (a count or checksum comparison would refuse the switch first). Only
/// where the target's partitions are otherwise the source's (every source partition there under
/// its name, parent and bound): a target partitioned its own way is the operator's design. The
/// topmost one of a subtree is detached (never dropped: its rows stay in it, a table of its
/// own), at a point of the stream where the source's table holds no row of its range
/// (`source_guard`, run in a snapshot there): then the target's partition holds exactly the
/// rows the source dropped, and whatever the stream brings later for that range goes where the
/// source put it.
std::vector<LaterObject> partitions_gone(const Scope& s)
{
    auto src = s.source.exec_params(source_partitions_sql(s.publication), {s.tables_param});
    std::map<std::string, std::map<std::string, PartitionPlace>> on_source; // root -> partition -> place
    for (int i = 0; i < src.rows(); ++i)
        on_source[src.str(i, 5)][src.str(i, 2)] = {src.str(i, 7), src.str(i, 6)};
    std::vector<std::string> roots;
    for (const auto& [root, parts] : on_source)
        if (s.tables.count(root))
            roots.push_back(root);
    if (roots.empty())
        return {};
    auto dst = s.target.exec_params(
        "SELECT r.name, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname || '.' || c.relname, "
        "       quote_ident(pn.nspname) || '.' || quote_ident(pc.relname), pg_get_expr(c.relpartbound, c.oid), "
        "       coalesce(pg_get_partition_constraintdef(c.oid), 'true') "
        "FROM unnest($1::text[]) r(name) JOIN pg_class rc ON rc.oid = to_regclass(r.name) AND rc.relkind = 'p' "
        "CROSS JOIN LATERAL pg_partition_tree(rc.oid) tree "
        "JOIN pg_class c ON c.oid = tree.relid AND tree.level > 0 JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_class pc ON pc.oid = tree.parentrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
        "ORDER BY tree.level, 2",
        {pg::text_array(roots)});
    std::map<std::string, std::map<std::string, PartitionPlace>> on_target;
    for (int i = 0; i < dst.rows(); ++i)
        on_target[dst.str(i, 0)][dst.str(i, 1)] = {dst.str(i, 3), dst.str(i, 4)};
    std::vector<LaterObject> out;
    for (int i = 0; i < dst.rows(); ++i) {
        const auto root = dst.str(i, 0), name = dst.str(i, 1), parent = dst.str(i, 3);
        const auto& source_parts = on_source[root];
        const auto& target_parts = on_target[root];
        if (source_parts.count(name))
            continue;
        if (target_parts.count(parent) && !source_parts.count(parent))
            continue; // its parent goes with it
        const bool same_layout = std::all_of(source_parts.begin(), source_parts.end(), [&](const auto& p) {
            auto t = target_parts.find(p.first);
            return t != target_parts.end() && t->second == p.second;
        });
        if (!same_layout)
            continue;
        LaterObject o;
        o.change = Change::detach;
        o.table = s.display.count(root) ? s.display.at(root) : root;
        o.what = "partition " + dst.str(i, 2);
        o.name = dst.str(i, 2);
        o.constraint = true; // the new primary would show rows the old one no longer has
        o.steps = {"ALTER TABLE " + parent + " DETACH PARTITION " + name};
        o.source_guard = "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(" +
                         s.source.quote_literal(root) + "::regclass) WHERE relid = pg_catalog.to_regclass(" +
                         s.source.quote_literal(name) + ")) AND NOT EXISTS (SELECT 1 FROM " + root + " WHERE " +
                         dst.str(i, 5) + ")";
        out.push_back(std::move(o));
    }
    return out;
}

namespace {

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

} // namespace

/// The values of the compared tables' enum types that the target's same-named type lacks
/// (`ALTER TYPE ... ADD VALUE` on the source during the migration, a common deploy step): apply
/// would stop at the first row that uses one ("invalid input value for enum"), and after a
/// cutover the application's writes of it would fail. Each is added where the source has it
/// (AFTER the value before it, or BEFORE the first), so that the types sort alike. When the
/// target's type has values the source's lacks (a RENAME VALUE there?), or orders its values
/// otherwise, nothing is added: which value is which is the operator's to say.
std::vector<LaterObject> enum_values_missing(const Scope& s)
{
    auto src = s.source.exec_params(source_enums_sql(s.publication), {s.tables_param});
    if (src.rows() == 0)
        return {};
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        names.push_back(src.str(i, 0));
    auto dst = s.target.exec_params("SELECT x.t, (SELECT string_agg(e.enumlabel, chr(1) ORDER BY e.enumsortorder) "
                                    "             FROM pg_enum e WHERE e.enumtypid = to_regtype(x.t)) "
                                    "FROM unnest($1::text[]) x(t) WHERE to_regtype(x.t) IS NOT NULL",
                                    {pg::text_array(names)});
    std::map<std::string, std::vector<std::string>> on_target;
    for (int i = 0; i < dst.rows(); ++i)
        on_target[dst.str(i, 0)] = dst.is_null(i, 1) ? std::vector<std::string>{} : split_chr1(dst.str(i, 1));
    std::vector<LaterObject> out;
    for (int i = 0; i < src.rows(); ++i) {
        auto it = on_target.find(src.str(i, 0));
        if (it == on_target.end())
            continue; // the target lacks the type: the table's own problem
        const auto want = split_chr1(src.str(i, 2));
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

namespace {

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

} // namespace

/// Triggers made, changed or dropped on the compared source tables after they reached the
/// target (an audit trigger, an updated_at trigger of a deploy): after a cutover the new
/// primary would behave otherwise on the application's writes. Missing ones are created (with
/// their enabled state), changed ones dropped and created again; one the target alone has is
/// listed with its DROP, left to the operator. They do not fire during apply (session_replication_role = replica), unless
/// enabled ALWAYS or REPLICA, as on the source.
std::vector<LaterObject> triggers_differ(const Scope& s)
{
    s.source.exec("SET LOCAL search_path = pg_catalog");
    auto src = s.source.exec_params(source_triggers_sql(s.publication), {s.tables_param});
    s.source.exec("SET LOCAL search_path TO DEFAULT");
    s.target.exec("SET LOCAL search_path = pg_catalog");
    auto dst = s.target.exec_params(target_triggers_sql(), {pg::text_array({s.tables.begin(), s.tables.end()})});
    s.target.exec("SET LOCAL search_path TO DEFAULT");
    struct Trigger {
        std::string def, state;
    };
    std::map<std::pair<std::string, std::string>, Trigger> want, have; // (table SQL, name)
    for (int i = 0; i < src.rows(); ++i)
        if (s.tables.count(src.str(i, 1)))
            want[{src.str(i, 1), src.str(i, 2)}] = {src.str(i, 3), src.str(i, 4)};
    for (int i = 0; i < dst.rows(); ++i)
        have[{dst.str(i, 0), dst.str(i, 1)}] = {dst.str(i, 2), dst.str(i, 3)};
    auto shown = [&](const std::string& table_sql) {
        auto d = s.display.find(table_sql);
        return d != s.display.end() ? d->second : table_sql;
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
            o.what = "definition of trigger " + name;
            o.steps = {drop, t.def};
        } else {
            o.what = "enabled state of trigger " + name;
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
        // Unlike a rule, it refuses no row during apply, and it may be the operator's own.
        o.by_hand = "pgshift cannot tell one the source dropped from one made on the target on purpose, and drops "
                    "neither: if the source dropped it, drop it there: " + o.steps.front();
        out.push_back(std::move(o));
    }
    return out;
}

/// The compared tables that have planner statistics on the source and none on the target (a
/// partitioned table: none for its whole tree): the initial copy loads rows without them, and
/// autovacuum analyzes a table a while later, never a partitioned one (PostgreSQL leaves that to
/// ANALYZE by hand), or never when it is off. A new primary without them plans the application's
/// queries blind. ANALYZE takes no lock that apply's writes wait for.
std::vector<LaterObject> statistics_missing(const Scope& s)
{
    auto src = s.source.exec_params(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname), n.nspname || '.' || t.relname FROM " +
            tables_from(s.publication) +
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE EXISTS (SELECT 1 FROM pg_stats st WHERE st.schemaname = n.nspname AND st.tablename = t.relname "
            "              AND st.inherited = (t.relkind = 'p')) "
            "ORDER BY 1",
        {s.tables_param});
    std::vector<std::string> names;
    for (int i = 0; i < src.rows(); ++i)
        if (s.tables.count(src.str(i, 0)))
            names.push_back(src.str(i, 0));
    if (names.empty())
        return {};
    auto dst = s.target.exec_params(
        "SELECT x.name FROM unnest($1::text[]) AS x(name) JOIN pg_class c ON c.oid = to_regclass(x.name) "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_stats st WHERE st.schemaname = n.nspname AND st.tablename = c.relname "
        "                  AND st.inherited = (c.relkind = 'p')) "
        "ORDER BY 1",
        {pg::text_array(names)});
    std::vector<LaterObject> out;
    for (int i = 0; i < dst.rows(); ++i) {
        const auto name = dst.str(i, 0);
        LaterObject o;
        o.table = s.display.count(name) ? s.display.at(name) : name;
        o.change = Change::analyze;
        o.what = "planner statistics";
        o.name = name;
        o.steps = {"ANALYZE " + name};
        out.push_back(std::move(o));
    }
    return out;
}

/// The published tables of `publication` whose name on the source differs from the one recorded
/// on the target for their relid (table_names.hpp): renamed, not written since.
std::vector<LaterObject> renamed_unwritten(const Scope& s)
{
    if (!s.publication)
        return {};
    if (s.target.exec("SELECT to_regclass('pgshift.table_names') IS NULL").get(0, 0) == "t")
        return {};
    auto recorded = s.target.exec_params("SELECT relid::text, nspname, relname, "
                                         "       to_regclass(quote_ident(nspname) || '.' || quote_ident(relname)) IS NOT NULL "
                                         "FROM pgshift.table_names WHERE slot = $1",
                                         {s.tables_param});
    if (recorded.rows() == 0)
        return {};
    std::map<std::string, int> by_relid;
    for (int i = 0; i < recorded.rows(); ++i)
        by_relid[recorded.str(i, 0)] = i;
    auto src = s.source.exec_params("SELECT c.oid::text, n.nspname, c.relname FROM pg_publication p "
                                    "JOIN pg_publication_rel pr ON pr.prpubid = p.oid JOIN pg_class c ON c.oid = pr.prrelid "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1",
                                    {s.tables_param});
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

} // namespace pgshift::apply::later
