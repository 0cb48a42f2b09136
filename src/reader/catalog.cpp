// Table selection, replica-identity checks and publication membership on the source.
#include "pgshift/reader/catalog.hpp"

#include <thread>

#include <spdlog/spdlog.h>

#include <fnmatch.h>

#include <map>

namespace pgshift::reader {

namespace {

bool glob_match(const std::vector<std::string>& globs, const std::string& name)
{
    for (const auto& g : globs)
        if (::fnmatch(g.c_str(), name.c_str(), 0) == 0)
            return true;
    return false;
}

/// Whether tables.include/exclude select "schema.name".
bool selected(const config::Tables& selection, const std::string& display)
{
    return (selection.include.empty() || glob_match(selection.include, display)) &&
           !glob_match(selection.exclude, display);
}

/// The relations (pg_class c, pg_namespace n) an operator can mean by a glob like "public.*":
/// outside the system schemas and pgshift's own, and not an extension's own. An extension's
/// tables (PostGIS's spatial_ref_sys) belong to it, as pg_dump treats them: CREATE EXTENSION
/// creates and fills them on the target (schema: copy creates the extension), so copying their
/// rows would collide with the extension's (duplicate key), and emptying them for a recopy
/// would delete the extension's rows.
constexpr const char* k_operator_relations =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') AND n.nspname NOT LIKE 'pg\\_%' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "                AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')";

/// Why a leaf relation (where rows live) has no usable replica identity; empty when it has one.
std::string leaf_identity_problem(char replident, bool has_pk, bool has_identity_index)
{
    switch (replident) {
    case 'f': return "";
    case 'd': return has_pk ? "" : "no primary key and REPLICA IDENTITY DEFAULT";
    case 'i': return has_identity_index ? "" : "REPLICA IDENTITY USING INDEX names an index that no longer exists";
    case 'n': return "REPLICA IDENTITY NOTHING";
    default: return std::string("unknown replica identity '") + replident + "'";
    }
}

} // namespace

std::string SourceTable::sql() const { return pg::quote_ident(schema) + "." + pg::quote_ident(name); }

std::vector<NotCarried> not_carried(pg::Connection& source, const config::Tables& selection)
{
    auto r = source.exec(
        "SELECT c.relkind::text, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE ((c.relkind IN ('r', 'p') AND c.relpersistence = 'u' AND NOT c.relispartition) OR c.relkind = 'm') "
        "AND " + std::string(k_operator_relations) + " "
        "ORDER BY 2, 3");
    std::vector<std::string> unlogged, matviews;
    for (int i = 0; i < r.rows(); ++i) {
        std::string display = r.str(i, 1) + "." + r.str(i, 2);
        if (!selected(selection, display))
            continue;
        (r.get(i, 0) == "m" ? matviews : unlogged).push_back(display);
    }
    auto some = [](const std::vector<std::string>& names) {
        constexpr std::size_t k_named = 5;
        std::string out;
        for (std::size_t i = 0; i < names.size() && i < k_named; ++i)
            out += (i ? ", " : "") + names[i];
        if (names.size() > k_named)
            out += " and " + std::to_string(names.size() - k_named) + " more";
        return out;
    };
    std::vector<NotCarried> out;
    if (!unlogged.empty())
        out.push_back({"unlogged_table",
                       std::to_string(unlogged.size()) + " unlogged table(s) match tables.include (" + some(unlogged) +
                           "): logical decoding has no changes of unlogged tables, so their rows are not copied or "
                           "replicated. ALTER TABLE ... SET LOGGED on the source to migrate them, or add them to "
                           "tables.exclude"});
    if (!matviews.empty())
        out.push_back({"materialized_view",
                       std::to_string(matviews.size()) + " materialized view(s) match tables.include (" +
                           some(matviews) +
                           "): logical replication carries tables only. Create them on the target and run "
                           "REFRESH MATERIALIZED VIEW there before cutover"});
    // pg_largeobject_metadata is readable by every role (pg_largeobject, with the data, is not).
    auto lo = source.exec("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata");
    if (auto n = lo.str(0, 0); n != "0")
        out.push_back({"large_objects",
                       n + " large object(s) in the source database: logical replication does not carry them "
                           "(pg_largeobject is a system catalog), and tables that reference them by oid arrive "
                           "with dangling references. Copy them to the target yourself (lo_export/lo_import, or "
                           "a pg_dump with --blobs) after the last change to them"});
    return out;
}

void require_logical_wal(pg::Connection& source)
{
    auto wal_level = source.exec("SHOW wal_level").str(0, 0);
    if (wal_level != "logical")
        throw SourceError("source wal_level is '" + wal_level + "', logical replication needs 'logical'", false);
}

std::vector<SourceTable> select_tables(pg::Connection& source, const config::Tables& selection)
{
    // One row per relation whose replica identity matters, root first: the table itself (for a
    // partitioned table published via its root, pgoutput describes every change with the root's
    // identity, which apply needs), and for a partitioned table every leaf partition (where the
    // rows live, so where the source checks the identity of an UPDATE or DELETE).
    auto r = source.exec(
        "SELECT n.nspname, c.relname, leaf.name, leaf.relreplident, leaf.has_pk, leaf.has_ri, leaf.is_root, "
        "c.relkind::text "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN LATERAL ("
        "  SELECT l.relid::regclass::text AS name, l.relid = c.oid AS is_root, lc.relreplident::text AS relreplident, "
        "         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = lc.oid AND i.indisprimary) AS has_pk, "
        "         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = lc.oid AND i.indisreplident) AS has_ri "
        "  FROM (SELECT c.oid AS relid "
        "        UNION ALL SELECT relid FROM pg_partition_tree(c.oid) WHERE c.relkind = 'p' AND relid <> c.oid) l "
        "  JOIN pg_class lc ON lc.oid = l.relid WHERE lc.relkind = 'r' OR l.relid = c.oid"
        ") leaf ON true "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' "
        "AND " + std::string(k_operator_relations) + " "
        "ORDER BY 1, 2, leaf.is_root DESC, 3");
    std::vector<SourceTable> out;
    for (int i = 0; i < r.rows(); ++i) {
        std::string display = r.str(i, 0) + "." + r.str(i, 1);
        if (!selected(selection, display))
            continue;
        if (out.empty() || out.back().display() != display)
            out.push_back({r.str(i, 0), r.str(i, 1), ""});
        if (r.is_null(i, 2))
            continue;
        auto why = leaf_identity_problem(r.get(i, 3).empty() ? '?' : r.get(i, 3)[0], r.get(i, 4) == "t",
                                         r.get(i, 5) == "t");
        auto& t = out.back();
        if (why.empty())
            continue;
        bool is_root = r.get(i, 6) == "t";
        bool partitioned_root = is_root && r.get(i, 7) == "p";
        t.refuses_writes = t.refuses_writes || !partitioned_root; // rows live there
        if (!t.identity_problem.empty()) {
            ++t.more_problems; // named in the message once the loop is done
            continue;
        }
        std::string leaf = r.str(i, 2);
        std::string what = is_root ? "table " + display : "table " + display + " (partition " + leaf + ")";
        std::string target = is_root ? pg::readable_ident(t.schema) + "." + pg::readable_ident(t.name) : leaf;
        std::string harm = partitioned_root
                               ? "its changes are published under this root, and without a root identity the target "
                                 "cannot apply their UPDATE and DELETE"
                               : "publishing it would make the source refuse the application's UPDATE and DELETE on it";
        t.identity_problem = what + " has no usable replica identity (" + why + "): " + harm +
                             ". Fix one of: ALTER TABLE " + target + " REPLICA IDENTITY FULL; or ALTER TABLE " +
                             target +
                             " REPLICA IDENTITY USING INDEX <a unique index on NOT NULL columns>; or add a primary "
                             "key; or add \"" +
                             display + "\" to tables.exclude";
    }
    for (auto& t : out)
        if (t.more_problems)
            t.identity_problem += " (and " + std::to_string(t.more_problems) + " more partition(s) of " + t.display() +
                                  " without a usable replica identity)";
    return out;
}

bool publication_exists(pg::Connection& source, const std::string& publication)
{
    return source.exec_params("SELECT 1 FROM pg_publication WHERE pubname = $1", {publication}).rows() == 1;
}

std::set<std::string> published_tables(pg::Connection& source, const std::string& publication)
{
    auto r = source.exec_params("SELECT n.nspname || '.' || c.relname FROM pg_publication p "
                                "JOIN pg_publication_rel pr ON pr.prpubid = p.oid "
                                "JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE p.pubname = $1",
                                {publication});
    std::set<std::string> out;
    for (int i = 0; i < r.rows(); ++i)
        out.insert(r.str(i, 0));
    return out;
}

void prepare_publication(pg::Connection& source, const std::string& publication,
                         const std::vector<SourceTable>& tables)
{
    std::string list;
    for (const auto& t : tables) {
        if (!t.identity_problem.empty())
            throw InternalError("prepare_publication: " + t.display() + " has no usable replica identity");
        list += (list.empty() ? "" : ", ") + t.sql();
    }
    if (tables.empty())
        throw ConfigError("no source table matches tables.include/tables.exclude");
    auto pub = pg::quote_ident(publication);
    if (!publication_exists(source, publication)) {
        source.exec("CREATE PUBLICATION " + pub + " FOR TABLE " + list + " WITH (publish_via_partition_root = true)");
        spdlog::info("created publication {} for {} tables", publication, tables.size());
    } else {
        source.exec("ALTER PUBLICATION " + pub + " SET TABLE " + list);
        source.exec("ALTER PUBLICATION " + pub + " SET (publish_via_partition_root = true)");
        spdlog::info("publication {} covers {} tables", publication, tables.size());
    }
}

bool drop_slot_when_idle(pg::Connection& conn, const std::string& slot, std::chrono::milliseconds wait)
{
    auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
        auto r = conn.exec_params("SELECT active FROM pg_replication_slots WHERE slot_name = $1", {slot});
        if (r.rows() == 0)
            return true;
        if (r.get(0, 0) != "t") {
            conn.exec_params("SELECT pg_drop_replication_slot($1)", {slot});
            return true;
        }
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

} // namespace pgshift::reader
