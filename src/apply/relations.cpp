// Relation resolution against the target catalog, and conflict keys of row changes.
#include "pgshift/apply/relations.hpp"

#include "pgshift/common/errors.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

namespace pgshift::apply {

namespace {

constexpr std::uint64_t k_fnv_offset = 1469598103934665603ull;
constexpr std::uint64_t k_fnv_prime = 1099511628211ull;

std::uint64_t fnv(std::uint64_t h, std::string_view bytes)
{
    for (unsigned char c : bytes)
        h = (h ^ c) * k_fnv_prime;
    return h;
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * k_fnv_prime;
}

/// The key of `set` in `row`, or nothing when a value is NULL (NULLs never conflict in a unique
/// index) or unknown (`unknown` set: an unchanged TOAST value).
std::optional<std::uint64_t> key_of(const RelationInfo& rel, std::size_t set_index, const protocol::TupleData& row,
                                    const protocol::TupleData* fallback, bool& unknown)
{
    std::uint64_t h = mix(rel.seed, set_index);
    for (auto col : rel.unique_sets[set_index]) {
        if (col >= row.columns.size())
            throw ProtocolError("tuple of " + rel.mapping.source_name + " has fewer columns than its Relation message");
        const auto* v = &row.columns[col];
        if (v->kind == protocol::ColumnKind::unchanged_toast && fallback && col < fallback->columns.size())
            v = &fallback->columns[col];
        if (v->kind == protocol::ColumnKind::unchanged_toast) {
            unknown = true;
            return std::nullopt;
        }
        if (v->kind == protocol::ColumnKind::null)
            return std::nullopt;
        h = mix(fnv(h, v->data), v->data.size());
    }
    return h;
}

/// Built-in types have the same OID on every server, so a column whose type in the stream
/// differs from the target's (ALTER COLUMN TYPE on the source, often int to bigint before the
/// ids run out) is seen here. Values still apply as text until one does not fit: a warning now,
/// with the fix, rather than an error on some later row.
/// `r`: resolve_relation's target query (attname in column 1, atttypid and atttypmod in 7 and 8).
void warn_type_changes(pg::Connection& catalog, const protocol::Relation& rel, const std::string& qualified,
                       const pg::Result& r)
{
    constexpr std::uint32_t k_first_normal_oid = 16384; // FirstNormalObjectId
    for (const auto& c : rel.columns) {
        if (c.type_oid >= k_first_normal_oid)
            continue;
        for (int i = 0; i < r.rows(); ++i) {
            if (r.is_null(i, 1) || r.str(i, 1) != c.name)
                continue;
            const auto oid = std::stoll(r.str(i, 7));
            const auto typmod = std::stoi(r.str(i, 8));
            if (oid >= k_first_normal_oid)
                break; // a domain or an extension's type on the target: not comparable by OID
            if (oid == c.type_oid && (typmod == c.type_modifier || typmod == -1 || c.type_modifier == -1))
                break;
            auto names = catalog.exec_params("SELECT format_type($1::oid, $2::int), format_type($3::oid, $4::int)",
                                             {std::to_string(c.type_oid), std::to_string(c.type_modifier),
                                              r.str(i, 7), r.str(i, 8)});
            spdlog::warn("column {} of {} is {} in the source's stream but {} on the target (its type changed on "
                         "the source?): values apply as text until one does not fit; change it on the target: "
                         "ALTER TABLE {} ALTER COLUMN {} TYPE {}",
                         std::string(c.name),
                         (rel.nspname.empty() ? std::string("pg_catalog") : std::string(rel.nspname)) + "." +
                             std::string(rel.relname),
                         names.str(0, 0), names.str(0, 1), qualified,
                         pg::quote_ident(c.name), names.str(0, 0));
            break;
        }
    }
}

} // namespace

RelId relid_of(const protocol::Message& change)
{
    return std::visit(
        [](const auto& x) -> RelId {
            if constexpr (requires { x.relid; })
                return x.relid;
            else
                return RelId{};
        },
        change);
}

std::shared_ptr<const RelationInfo> resolve_relation(pg::Connection& catalog, std::string payload,
                                                     const protocol::DecodeContext& decode, std::uint64_t generation)
{
    auto info = std::make_shared<RelationInfo>();
    info->payload = std::move(payload);
    info->decode = decode;
    auto rel = std::get<protocol::Relation>(protocol::decode(info->payload, info->decode));
    std::string nsp = rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname);
    auto qualified = pg::quote_ident(nsp) + "." + pg::quote_ident(rel.relname);
    // For each target column: does its type (a domain's base type) have a default btree
    // opclass, so that '=' works? Arrays, composites and ranges are compared as text.
    auto r = catalog.exec_params(
        "SELECT c.relkind, a.attname, a.attgenerated <> '', "
        "  bt.typtype IN ('b', 'e') AND bt.typcategory <> 'A' AND EXISTS ("
        "    SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod "
        "    WHERE am.amname = 'btree' AND oc.opcdefault "
        "      AND oc.opcintype = CASE WHEN bt.typtype = 'e' THEN 'anyenum'::regtype ELSE bt.oid END), "
        // The catalog session's search_path is pg_catalog: every other type comes qualified.
        "  format_type(a.atttypid, NULL), "
        // Types whose equal values always print the same text (not numeric, float, interval,
        // citext, ...), with a deterministic collation.
        "  (bt.typtype = 'e' OR bt.oid = ANY ('{16,17,18,19,20,21,23,25,26,1042,1043,1082,1083,1114,1184,2950}'::oid[])) "
        "  AND (a.attcollation = 0 OR coalesce((SELECT collisdeterministic FROM pg_collation "
        "                                       WHERE oid = a.attcollation), false)), "
        // Triggers that fire under session_replication_role = replica, on the table or a partition.
        "  EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgrelid IN (SELECT relid FROM pg_partition_tree(c.oid)) "
        "          AND NOT tg.tgisinternal AND tg.tgenabled IN ('A', 'R')), "
        // The column's type, compared with the stream's (warn_type_changes).
        "  a.atttypid::int8, a.atttypmod "
        "FROM pg_class c "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        "WHERE c.oid = to_regclass($1) ORDER BY a.attnum",
        {qualified});
    if (r.rows() == 0)
        throw TargetError("table " + nsp + "." + std::string(rel.relname) +
                              " does not exist on the target; create it there, then run `pgshift resume`",
                          false);
    std::vector<TargetColumn> cols;
    for (int i = 0; i < r.rows(); ++i)
        if (!r.is_null(i, 1))
            cols.push_back({r.str(i, 1), r.get(i, 3) == "t", r.get(i, 2) == "t", r.str(i, 4), r.get(i, 5) == "t"});
    bool triggers = r.get(0, 6) == "t";
    info->mapping = map_relation(rel, cols, r.get(0, 0) == "p", generation);
    warn_type_changes(catalog, rel, qualified, r);
    info->seed = fnv(k_fnv_offset, qualified);

    // Unique sets: the replica identity key, then every plain unique index of the target.
    std::vector<std::uint16_t> identity;
    for (std::size_t i = 0; i < rel.columns.size(); ++i)
        if (rel.columns[i].is_key())
            identity.push_back(static_cast<std::uint16_t>(i));
    if (!identity.empty() && rel.replident != protocol::ReplicaIdentity::full)
        info->unique_sets.push_back(identity);
    auto ix = catalog.exec_params("SELECT i.indexrelid, a.attname FROM pg_index i "
                                  "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
                                  "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                                  "WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL "
                                  "AND i.indexprs IS NULL ORDER BY i.indexrelid, k.ord",
                                  {qualified});
    std::map<std::string, std::vector<std::string>> indexes;
    for (int i = 0; i < ix.rows(); ++i)
        indexes[ix.str(i, 0)].push_back(ix.str(i, 1));
    for (const auto& [oid, names] : indexes) {
        std::vector<std::uint16_t> set;
        for (const auto& n : names) {
            auto it = std::find_if(rel.columns.begin(), rel.columns.end(),
                                   [&](const protocol::RelationColumn& c) { return c.name == n; });
            if (it == rel.columns.end()) {
                set.clear(); // a target-only column: its values do not come from the source
                break;
            }
            set.push_back(static_cast<std::uint16_t>(it - rel.columns.begin()));
        }
        if (!set.empty() && std::find(info->unique_sets.begin(), info->unique_sets.end(), set) == info->unique_sets.end())
            info->unique_sets.push_back(std::move(set));
    }
    info->table_key = info->unique_sets.empty();
    if (rel.replident != protocol::ReplicaIdentity::full)
        info->identity = identity;
    info->multirow = !triggers;
    info->compactable = !triggers && !info->identity.empty() &&
                        std::all_of(info->identity.begin(), info->identity.end(),
                                    [&](std::uint16_t c) { return info->mapping.columns[c].canonical_text; });
    return info;
}

bool append_keys(const protocol::Message& change, const RelationInfo& rel, std::vector<std::uint64_t>& out)
{
    if (rel.table_key) {
        // No unique index: inserts never conflict with each other, so they need no key. An
        // UPDATE or DELETE finds its row by the whole old image, possibly one an earlier batch
        // inserted: it runs alone, after everything before it.
        return std::holds_alternative<protocol::Insert>(change);
    }
    bool unknown = false;
    auto add_all = [&](const protocol::TupleData& row, const protocol::TupleData* fallback) {
        for (std::size_t s = 0; s < rel.unique_sets.size(); ++s)
            if (auto k = key_of(rel, s, row, fallback, unknown))
                out.push_back(*k);
    };
    if (const auto* ins = std::get_if<protocol::Insert>(&change)) {
        add_all(ins->new_tuple, nullptr);
    } else if (const auto* up = std::get_if<protocol::Update>(&change)) {
        bool has_old = up->old_kind != protocol::OldKind::none;
        add_all(up->new_tuple, has_old ? &up->old_tuple : nullptr);
        if (has_old) {
            bool ignore = false; // the old image's unknown values are simply not keys
            for (std::size_t s = 0; s < rel.unique_sets.size(); ++s)
                if (auto k = key_of(rel, s, up->old_tuple, nullptr, ignore))
                    out.push_back(*k);
        }
    } else if (const auto* del = std::get_if<protocol::Delete>(&change)) {
        bool ignore = false;
        for (std::size_t s = 0; s < rel.unique_sets.size(); ++s)
            if (auto k = key_of(rel, s, del->old_tuple, nullptr, ignore))
                out.push_back(*k);
    }
    return !unknown;
}

} // namespace pgshift::apply
