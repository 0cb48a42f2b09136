// Indexes and constraints made on the source later (see later_objects.hpp).
#include "pgshift/apply/later_objects.hpp"

#include "later_kinds.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace pgshift::apply {

namespace later {

/// The source tables compared: those of a publication ($1 its name), or a list ($1 a text[] of
/// qualified names). Joined as `t`.
std::string tables_from(bool publication)
{
    return publication ? "pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid AND p.pubname = $1 "
                         "JOIN pg_class t ON t.oid = pr.prrelid "
                       : "unnest($1::text[]) s(tbl) JOIN pg_class t ON t.oid = to_regclass(s.tbl) ";
}

} // namespace later

using later::tables_from;

namespace {

// An index's definition without its name, so that the same index under another name matches.
constexpr const char* k_index_shape =
    "replace(pg_get_indexdef(i.oid), ' INDEX ' || quote_ident(i.relname) || ' ON ', ' INDEX ON ')";

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
    if (o.change == Change::owner)
        return 7;
    if (o.change == Change::analyze)
        return 8; // after the indexes (an expression index gets statistics of its own) // once everything it applies to exists, and the role's grants (CREATE on the schema) are in
    if (o.change == Change::rename)
        return -4;
    if (o.change == Change::detach)
        return -4; // before a partition made again for its range
    if (o.what.rfind("partition ", 0) == 0)
        return -1; // before what is built on the tables (after the drops: same rank as NOT NULL)
    if (o.change == Change::grant || o.change == Change::revoke || o.change == Change::defaults)
        return 3;
    if (o.change == Change::create && o.what.rfind("value ", 0) == 0)
        return -1; // an enum's value: before anything that may use it
    if (o.change == Change::create)
        return o.what.rfind("view", 0) == 0 || o.what.rfind("definition of view", 0) == 0 ? 5 : 4; // a view may call a function
    if (!o.dropped() && o.what.find("trigger ") != std::string::npos)
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
    case Change::defaults:
        line += " differ between the servers: what the application creates on the new primary after a cutover "
                "would get other grants than on the old: ";
        break;
    case Change::analyze:
        line += " are on the source but not on the target: the new primary would plan the application's queries "
                "without them: ";
        break;
    case Change::revoke:
        line += " is on the target but not on the source: after a cutover every role could call it on the new "
                "primary: ";
        break;
    case Change::owner:
        line += " differs: after a cutover the application connecting as " + name +
                " could not alter or drop it (its next migration fails), and a view or SECURITY DEFINER function "
                "would run with another role's rights: ";
        break;
    case Change::detach:
        line += " is on the target but no longer on the source (dropped or detached there): after a cutover the "
                "new primary would show the rows the source dropped: ";
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
        if (change == Change::grant || change == Change::secure || change == Change::defaults)
            return steps.front() + (steps.size() > 1 ? "; ... (" + std::to_string(steps.size()) + " statements)" : "");
        return steps.front() + (steps.size() > 1 ? "; " + steps.back() : "");
    };
    if (!by_hand.empty() && (change == Change::owner || change == Change::defaults) && by_hand.rfind("role ", 0) == 0)
        return line + by_hand + (builds ? ", then pgshift changes it (schema: copy)" : ", then: " + shown());
    if (!by_hand.empty() && change == Change::grant) // a missing role: what it then needs
        return line + by_hand + (builds ? ", then pgshift grants them (schema: copy)" : ", then: " + shown());
    if (!by_hand.empty() && change == Change::secure)
        return line + by_hand + (builds ? ", then pgshift makes it the same (schema: copy)" : ", then: " + shown());
    if (!by_hand.empty())
        return line + by_hand;
    if (builds)
        return line + done;
    const char* what_to_do = change == Change::detach   ? "detach it there once apply has passed the drop (its rows "
                                                          "stay in it; drop it when they are no longer needed): "
                             : change == Change::owner    ? "change it there: "
                             : change == Change::revoke   ? "revoke it there: "
                             : change == Change::analyze  ? "run there: "
                             : change == Change::defaults ? "make them the same there: "
                             : change == Change::drop     ? "drop it there: "
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
    const later::Scope scope{source, target, publication, tables_param, tables, display};
    for (auto* kind : {later::privileges_missing, later::routines_missing, later::partitions_missing,
                       later::partitions_gone, later::enum_values_missing, later::triggers_differ,
                       later::row_security_differs, later::owners_differ, later::routine_privileges_differ,
                       later::default_privileges_differ, later::statistics_missing, later::renamed_unwritten})
        for (auto& o : kind(scope))
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
