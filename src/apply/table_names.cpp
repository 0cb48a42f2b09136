// Tables renamed on the source (see table_names.hpp).
#include "pgshift/apply/table_names.hpp"

#include "pgshift/common/errors.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace pgshift::apply {

namespace {

constexpr const char* k_ddl = "CREATE SCHEMA IF NOT EXISTS pgshift; "
                              "CREATE TABLE IF NOT EXISTS pgshift.table_names ("
                              "  slot text NOT NULL,"
                              "  relid oid NOT NULL,"
                              "  nspname text NOT NULL,"
                              "  relname text NOT NULL,"
                              "  PRIMARY KEY (slot, relid))";
constexpr const char* k_columns_ddl = "CREATE TABLE IF NOT EXISTS pgshift.column_names ("
                                      "  slot text NOT NULL,"
                                      "  relid oid NOT NULL,"
                                      "  attnum int NOT NULL,"
                                      "  attname text NOT NULL,"
                                      "  PRIMARY KEY (slot, relid, attnum))";

bool exists(pg::Connection& target, const TableName& t)
{
    return target.exec_params("SELECT to_regclass($1) IS NOT NULL", {t.sql()}).get(0, 0) == "t";
}

} // namespace

std::string rename_statement(const TableName& from, const TableName& to)
{
    std::string s;
    if (from.nspname != to.nspname)
        s = "ALTER TABLE " + from.sql() + " SET SCHEMA " + pg::quote_ident(to.nspname);
    if (from.relname != to.relname)
        s += (s.empty() ? "" : "; ") + std::string("ALTER TABLE ") + TableName{to.nspname, from.relname}.sql() +
             " RENAME TO " + pg::quote_ident(to.relname);
    return s;
}

Published published_relations(pg::Connection& source, const std::string& publication)
{
    auto r = source.exec_params("SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname FROM pg_publication p "
                                "JOIN pg_publication_rel pr ON pr.prpubid = p.oid "
                                "JOIN pg_class c ON c.oid = pr.prrelid "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                                "WHERE p.pubname = $1",
                                {publication});
    Published out;
    for (int i = 0; i < r.rows(); ++i) {
        const RelId relid{static_cast<std::uint32_t>(std::stoul(r.str(i, 0)))};
        out.tables[relid] = {r.str(i, 1), r.str(i, 2)};
        if (!r.is_null(i, 3))
            out.columns[relid][std::stoi(r.str(i, 3))] = r.str(i, 4);
    }
    return out;
}

bool TableNames::load(pg::Connection& target, const Published& published, bool fresh)
{
    names_.clear();
    columns_.clear();
    usable_ = false;
    std::vector<std::string> relids, nsps, names;
    for (const auto& [relid, t] : published.tables) {
        relids.push_back(std::to_string(relid.value));
        nsps.push_back(t.nspname);
        names.push_back(t.relname);
    }
    std::vector<std::string> column_relids, attnums, attnames;
    for (const auto& [relid, columns] : published.columns)
        for (const auto& [attnum, name] : columns) {
            column_relids.push_back(std::to_string(relid.value));
            attnums.push_back(std::to_string(attnum));
            attnames.push_back(name);
        }
    try {
        pg::in_transaction(target, [&] {
            if (target.exec("SELECT to_regclass('pgshift.table_names') IS NULL").get(0, 0) == "t")
                target.exec(k_ddl);
            if (target.exec("SELECT to_regclass('pgshift.column_names') IS NULL").get(0, 0) == "t")
                target.exec(k_columns_ddl);
            if (fresh) {
                target.exec_params("DELETE FROM pgshift.table_names WHERE slot = $1", {slot_});
                target.exec_params("DELETE FROM pgshift.column_names WHERE slot = $1", {slot_});
            }
            target.exec_params("INSERT INTO pgshift.table_names (slot, relid, nspname, relname) "
                               "SELECT $1, r::oid, n, t FROM unnest($2::text[], $3::text[], $4::text[]) AS x(r, n, t) "
                               "ON CONFLICT (slot, relid) DO NOTHING",
                               {slot_, pg::text_array(relids), pg::text_array(nsps), pg::text_array(names)});
            // A name recorded earlier stays: it is the one the stream (maybe still behind a
            // rename made while pgshift was stopped) and the target use.
            target.exec_params("INSERT INTO pgshift.column_names (slot, relid, attnum, attname) "
                               "SELECT $1, r::oid, a::int, n FROM unnest($2::text[], $3::text[], $4::text[]) AS x(r, a, n) "
                               "ON CONFLICT (slot, relid, attnum) DO NOTHING",
                               {slot_, pg::text_array(column_relids), pg::text_array(attnums), pg::text_array(attnames)});
        });
        auto r = target.exec_params("SELECT relid, nspname, relname FROM pgshift.table_names WHERE slot = $1", {slot_});
        for (int i = 0; i < r.rows(); ++i)
            names_[RelId{static_cast<std::uint32_t>(std::stoul(r.str(i, 0)))}] = {r.str(i, 1), r.str(i, 2)};
        auto c = target.exec_params("SELECT relid, attnum, attname FROM pgshift.column_names WHERE slot = $1", {slot_});
        for (int i = 0; i < c.rows(); ++i)
            columns_[RelId{static_cast<std::uint32_t>(std::stoul(c.str(i, 0)))}][std::stoi(c.str(i, 1))] = c.str(i, 2);
    } catch (const pg::PgError& e) {
        if (e.broken())
            throw;
        spdlog::warn("could not record the replicated tables' names on the target (pgshift.table_names): a table "
                     "renamed on the source will stop apply, as if the target lacked it: {}",
                     e.what());
        return false;
    }
    usable_ = true;
    return true;
}

void TableNames::forget(pg::Connection& target, const std::string& slot)
{
    if (target.exec("SELECT to_regclass('pgshift.table_names') IS NOT NULL").get(0, 0) == "t")
        target.exec_params("DELETE FROM pgshift.table_names WHERE slot = $1", {slot});
    if (target.exec("SELECT to_regclass('pgshift.column_names') IS NOT NULL").get(0, 0) == "t")
        target.exec_params("DELETE FROM pgshift.column_names WHERE slot = $1", {slot});
}

void TableNames::remember(pg::Connection& target, RelId relid, const TableName& name)
{
    if (!usable_ || names_.count(relid))
        return;
    record(target, relid, name);
}

void TableNames::record(pg::Connection& target, RelId relid, const TableName& name)
{
    target.exec_params("INSERT INTO pgshift.table_names (slot, relid, nspname, relname) VALUES ($1, $2, $3, $4) "
                       "ON CONFLICT (slot, relid) DO UPDATE SET nspname = excluded.nspname, relname = excluded.relname",
                       {slot_, std::to_string(relid.value), name.nspname, name.relname});
    names_[relid] = name;
}

std::optional<TableName> TableNames::renamed(RelId relid, const TableName& stream) const
{
    auto it = names_.find(relid);
    if (!usable_ || it == names_.end() || it->second == stream)
        return std::nullopt;
    return it->second;
}

std::optional<RelId> TableNames::recorded_as(const TableName& name) const
{
    for (const auto& [relid, t] : names_)
        if (t == name)
            return relid;
    return std::nullopt;
}

void TableNames::rename(pg::Connection& target, RelId relid, const TableName& from, const TableName& to, bool follow)
{
    const auto what = "table " + from.display() + " was renamed to " + to.display() + " on the source";
    const auto other = recorded_as(to);
    auto moved = names_; // the records as they will be once committed
    pg::in_transaction(target, [&] {
        target.exec("SET LOCAL search_path = pg_catalog");
        const bool has_from = exists(target, from), has_to = exists(target, to);
        if (has_to && !(follow && other && *other != relid && has_from)) {
            if (!has_from || !follow) {
                // Renamed on the target already (by hand, with schema: verify).
                target.exec_params("UPDATE pgshift.table_names SET nspname = $3, relname = $4 "
                                   "WHERE slot = $1 AND relid = $2",
                                   {slot_, std::to_string(relid.value), to.nspname, to.relname});
                spdlog::info("{}, and the target has {}: applying its changes there", what, to.display());
                moved[relid] = to;
                return;
            }
            throw TargetError(what + ", and the target has both tables: rename or drop the one that does not hold the "
                                     "rows of the source's " + to.display() + " on the target, then run `pgshift resume`",
                              false);
        }
        if (!has_from)
            throw TargetError(what + " (the same relation), and the target has neither: create " + to.display() +
                                  " there as on the source, then run `pgshift resume`",
                              false);
        if (!follow)
            throw TargetError(what + " (the same relation): rename it on the target (" + rename_statement(from, to) +
                                  "), then run `pgshift resume`",
                              false);
        if (has_to) {
            // A swap half done: the target's table of the new name belongs to another relation,
            // whose own Relation message (with its new name) renames it again.
            const TableName aside{to.nspname, "pgshift_moved_" + std::to_string(other->value)};
            target.exec("ALTER TABLE " + to.sql() + " RENAME TO " + pg::quote_ident(aside.relname));
            target.exec_params("UPDATE pgshift.table_names SET relname = $3 WHERE slot = $1 AND relid = $2",
                               {slot_, std::to_string(other->value), aside.relname});
            moved[*other] = aside;
            spdlog::warn("{}, and the target's {} belongs to another source relation (renamed too): moved aside as {} "
                         "until that relation's changes come",
                         what, to.display(), aside.display());
        }
        // Both statements in this transaction: a moment's ACCESS EXCLUSIVE lock on the table.
        if (from.nspname != to.nspname)
            target.exec("ALTER TABLE " + from.sql() + " SET SCHEMA " + pg::quote_ident(to.nspname));
        if (from.relname != to.relname)
            target.exec("ALTER TABLE " + pg::quote_ident(to.nspname) + "." + pg::quote_ident(from.relname) +
                        " RENAME TO " + pg::quote_ident(to.relname));
        target.exec_params("UPDATE pgshift.table_names SET nspname = $3, relname = $4 WHERE slot = $1 AND relid = $2",
                           {slot_, std::to_string(relid.value), to.nspname, to.relname});
        moved[relid] = to;
        spdlog::warn("{}: renamed on the target too (schema: copy)", what);
    });
    names_ = std::move(moved);
}

ColumnChanges TableNames::renamed_columns(pg::Connection& source, RelId relid, const std::vector<std::string>& missing,
                                          const std::vector<std::string>& extra) const
{
    auto recorded = columns_.find(relid);
    if (!usable_ || recorded == columns_.end() || missing.empty() || extra.empty())
        return {};
    // Every attnum the source's table has used, live or dropped, with the name of a live one.
    auto r = source.exec_params("SELECT attnum, attname, attisdropped FROM pg_catalog.pg_attribute "
                                "WHERE attrelid = $1::oid AND attnum > 0",
                                {std::to_string(relid.value)});
    std::map<int, std::string> live;
    std::set<int> dropped;
    for (int i = 0; i < r.rows(); ++i) {
        const int attnum = std::stoi(r.str(i, 0));
        if (r.get(i, 2) == "t")
            dropped.insert(attnum);
        else
            live[attnum] = r.str(i, 1);
    }
    ColumnChanges out;
    for (const auto& [attnum, name] : live) {
        if (std::find(missing.begin(), missing.end(), name) == missing.end())
            continue;
        auto was = recorded->second.find(attnum);
        if (was != recorded->second.end() && was->second != name &&
            std::find(extra.begin(), extra.end(), was->second) != extra.end())
            out.renamed.push_back({was->second, name});
    }
    out.others_dropped = std::all_of(extra.begin(), extra.end(), [&](const std::string& e) {
        if (std::any_of(out.renamed.begin(), out.renamed.end(), [&](const auto& c) { return c.from == e; }))
            return true;
        return std::any_of(recorded->second.begin(), recorded->second.end(),
                           [&](const auto& c) { return c.second == e && dropped.count(c.first); });
    });
    return out;
}

void TableNames::rename_columns(pg::Connection& target, RelId relid, const std::string& display,
                                const std::string& qualified, const std::vector<ColumnRename>& renames)
{
    auto columns = columns_[relid];
    pg::in_transaction(target, [&] {
        for (const auto& c : renames) {
            target.exec("ALTER TABLE " + qualified + " RENAME COLUMN " + pg::quote_ident(c.from) + " TO " +
                        pg::quote_ident(c.to));
            target.exec_params("UPDATE pgshift.column_names SET attname = $4 WHERE slot = $1 AND relid = $2 "
                               "AND attname = $3",
                               {slot_, std::to_string(relid.value), c.from, c.to});
            for (auto& [attnum, name] : columns)
                if (name == c.from)
                    name = c.to;
        }
    });
    columns_[relid] = std::move(columns);
    for (const auto& c : renames)
        spdlog::warn("column {} of {} was renamed to {} on the source (the same column): renamed on the target too "
                     "(schema: copy)",
                     c.from, display, c.to);
}

void TableNames::remember_columns(pg::Connection& source, pg::Connection& target, RelId relid,
                                  const std::vector<std::string>& names)
{
    if (!usable_ || names.empty())
        return;
    auto r = source.exec_params("SELECT attnum, attname FROM pg_catalog.pg_attribute WHERE attrelid = $1::oid "
                                "AND attnum > 0 AND NOT attisdropped AND attname = ANY ($2::text[])",
                                {std::to_string(relid.value), pg::text_array(names)});
    for (int i = 0; i < r.rows(); ++i) {
        target.exec_params("INSERT INTO pgshift.column_names (slot, relid, attnum, attname) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT (slot, relid, attnum) DO UPDATE SET attname = excluded.attname",
                           {slot_, std::to_string(relid.value), r.str(i, 0), r.str(i, 1)});
        columns_[relid][std::stoi(r.str(i, 0))] = r.str(i, 1);
    }
}

} // namespace pgshift::apply
