// Relation mapping by column name and SQL text for INSERT/UPDATE/DELETE shapes.
#include "pgshift/apply/statements.hpp"

#include "pgshift/common/errors.hpp"
#include "pgshift/pg/connection.hpp"

namespace pgshift::apply {

namespace {

using protocol::ColumnKind;

std::string where_clause(const RelationMapping& m, const protocol::TupleData& key_row, bool full_old,
                         std::uint8_t tuple, Statement& st, std::string& shape)
{
    std::string w;
    for (std::size_t i = 0; i < m.columns.size(); ++i) {
        const auto& c = m.columns[i];
        if (!full_old && !c.key)
            continue;
        if (i >= key_row.columns.size())
            throw ProtocolError("tuple of " + m.source_name + " has fewer columns than its Relation message");
        auto kind = key_row.columns[i].kind;
        if (!w.empty())
            w += " AND ";
        if (kind == ColumnKind::null) {
            if (!full_old)
                throw ProtocolError("replica identity column " + c.name + " of " + m.source_name + " is NULL");
            w += c.quoted + " IS NULL";
            shape.push_back('n');
            continue;
        }
        if (kind != ColumnKind::text)
            throw ProtocolError(std::string("replica identity column ") + c.name + " of " + m.source_name +
                                " has value kind '" + static_cast<char>(kind) + "'");
        st.params.push_back({tuple, static_cast<std::uint16_t>(i)});
        auto p = "$" + std::to_string(st.params.size());
        if (c.has_btree_equality || !full_old)
            w += c.quoted + " = " + p;
        else
            w += c.quoted + "::text = " + p; // no '=' for this type: compare the text renderings
        shape.push_back('v');
    }
    if (w.empty())
        throw ProtocolError("relation " + m.source_name + " has no replica identity columns");
    return w;
}

/// The row locator for UPDATE/DELETE: key equality, or the first row equal to the FULL old image.
std::string locate(const RelationMapping& m, const protocol::TupleData& key_row, bool full_old, std::uint8_t tuple,
                   Statement& st, std::string& shape)
{
    auto w = where_clause(m, key_row, full_old, tuple, st, shape);
    if (!full_old)
        return w;
    if (m.partitioned)
        return "(tableoid, ctid) = (SELECT tableoid, ctid FROM " + m.qualified + " WHERE " + w + " LIMIT 1)";
    return "ctid = (SELECT ctid FROM ONLY " + m.qualified + " WHERE " + w + " LIMIT 1)";
}

std::string target_of(const RelationMapping& m) { return (m.partitioned ? "" : "ONLY ") + m.qualified; }

} // namespace

RelationMapping map_relation(const protocol::Relation& rel, const std::vector<TargetColumn>& target,
                             bool target_partitioned, std::uint64_t generation)
{
    RelationMapping m;
    m.relid = rel.relid;
    std::string nsp = rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname);
    m.source_name = nsp + "." + std::string(rel.relname);
    m.qualified = pg::quote_ident(nsp) + "." + pg::quote_ident(rel.relname);
    m.partitioned = target_partitioned;
    m.replident = rel.replident;
    m.generation = generation;
    for (const auto& sc : rel.columns) {
        const TargetColumn* tc = nullptr;
        for (const auto& t : target)
            if (t.name == sc.name)
                tc = &t;
        if (!tc)
            throw TargetError("column \"" + std::string(sc.name) + "\" of source table " + m.source_name +
                                  " does not exist on the target table; add it on the target, then run "
                                  "`pgshift resume`",
                              false);
        if (tc->generated)
            throw TargetError("column \"" + std::string(sc.name) + "\" of " + m.source_name +
                                  " is generated on the target but not on the source",
                              false);
        m.columns.push_back({std::string(sc.name), pg::quote_ident(sc.name), sc.is_key(), tc->has_btree_equality,
                             tc->type, tc->canonical_text});
    }
    return m;
}

Statement build_insert(const RelationMapping& m, const protocol::TupleData& row)
{
    if (row.columns.size() != m.columns.size())
        throw ProtocolError("INSERT into " + m.source_name + " carries " + std::to_string(row.columns.size()) +
                            " columns, its Relation message " + std::to_string(m.columns.size()));
    Statement st;
    st.key = "I" + std::to_string(m.generation);
    std::string cols, vals;
    for (std::size_t i = 0; i < m.columns.size(); ++i) {
        auto kind = row.columns[i].kind;
        if (kind != ColumnKind::text && kind != ColumnKind::null)
            throw ProtocolError(std::string("INSERT into ") + m.source_name + " column " + m.columns[i].name +
                                " has value kind '" + static_cast<char>(kind) + "'");
        if (i) {
            cols += ", ";
            vals += ", ";
        }
        cols += m.columns[i].quoted;
        st.params.push_back({0, static_cast<std::uint16_t>(i)});
        vals += "$" + std::to_string(st.params.size());
    }
    st.sql = "INSERT INTO " + m.qualified + " (" + cols + ") VALUES (" + vals + ")";
    return st;
}

Statement build_update(const RelationMapping& m, const protocol::TupleData& new_row,
                       const protocol::TupleData& key_row, bool key_from_old, bool full_old)
{
    if (new_row.columns.size() != m.columns.size() || key_row.columns.size() != m.columns.size())
        throw ProtocolError("UPDATE of " + m.source_name + " does not match its Relation message's column count");
    Statement st;
    std::string shape = "U" + std::to_string(m.generation) + (key_from_old ? (full_old ? "O" : "K") : "N") + ":";
    std::string set;
    for (std::size_t i = 0; i < m.columns.size(); ++i) {
        auto kind = new_row.columns[i].kind;
        if (kind == ColumnKind::unchanged_toast) {
            shape.push_back('u'); // unchanged TOAST: leave the column alone (rule 6)
            continue;
        }
        if (kind != ColumnKind::text && kind != ColumnKind::null)
            throw ProtocolError(std::string("UPDATE of ") + m.source_name + " column " + m.columns[i].name +
                                " has value kind '" + static_cast<char>(kind) + "'");
        shape.push_back('s');
        if (!set.empty())
            set += ", ";
        st.params.push_back({0, static_cast<std::uint16_t>(i)});
        set += m.columns[i].quoted + " = $" + std::to_string(st.params.size());
    }
    if (set.empty())
        set = m.columns.at(0).quoted + " = " + m.columns.at(0).quoted;
    shape.push_back(':');
    auto where = locate(m, key_row, full_old, key_from_old ? 1 : 0, st, shape);
    st.sql = "UPDATE " + target_of(m) + " SET " + set + " WHERE " + where;
    st.key = std::move(shape);
    return st;
}

Statement build_delete(const RelationMapping& m, const protocol::TupleData& old_row, bool full_old)
{
    if (old_row.columns.size() != m.columns.size())
        throw ProtocolError("DELETE from " + m.source_name + " does not match its Relation message's column count");
    Statement st;
    std::string shape = "D" + std::to_string(m.generation) + (full_old ? "O" : "K") + ":";
    auto where = locate(m, old_row, full_old, 1, st, shape);
    st.sql = "DELETE FROM " + target_of(m) + " WHERE " + where;
    st.key = std::move(shape);
    return st;
}

std::string guarded(const std::string& sql, std::size_t rows)
{
    // A cast that fails names the shortfall: 'invalid input syntax for type integer: "pgshift:
    // 1 of 1 row(s) to change not found"'. count(*) keeps the ELSE branch from being folded.
    const auto n = std::to_string(rows);
    return "WITH pgshift_w AS (" + sql + " RETURNING 1) SELECT CASE WHEN count(*) >= " + n +
           " THEN 0 ELSE ('pgshift: ' || (" + n + " - count(*)) || ' of " + n +
           " row(s) to change not found')::int END FROM pgshift_w";
}

namespace {

/// ` AS pgshift_t ... (VALUES ...) AS pgshift_v(p1, ...)`: the VALUES list of `rows` rows of
/// `cols` (source column positions, all from tuple `tuple`), with casts.
std::string values_list(const RelationMapping& m, const std::vector<std::uint16_t>& cols, std::size_t rows,
                        Statement& st, std::uint8_t tuple)
{
    std::string v = "(VALUES ";
    for (std::size_t r = 0; r < rows; ++r) {
        v += r ? ", (" : "(";
        for (std::size_t i = 0; i < cols.size(); ++i) {
            auto n = r * cols.size() + i + 1;
            v += (i ? ", $" : "$") + std::to_string(n) + "::" + m.columns[cols[i]].type;
        }
        v += ")";
    }
    v += ") AS pgshift_v(";
    for (std::size_t i = 0; i < cols.size(); ++i)
        v += (i ? ", p" : "p") + std::to_string(i + 1);
    v += ")";
    for (auto c : cols)
        st.params.push_back({tuple, c});
    return v;
}

std::vector<std::uint16_t> key_columns(const RelationMapping& m)
{
    std::vector<std::uint16_t> k;
    for (std::size_t i = 0; i < m.columns.size(); ++i)
        if (m.columns[i].key)
            k.push_back(static_cast<std::uint16_t>(i));
    if (k.empty())
        throw ProtocolError("relation " + m.source_name + " has no replica identity columns");
    return k;
}

/// `pgshift_t.k1 = pgshift_v.p1 AND ...` for the first key.size() VALUES columns.
std::string key_match(const RelationMapping& m, const std::vector<std::uint16_t>& key)
{
    std::string w;
    for (std::size_t i = 0; i < key.size(); ++i)
        w += (i ? " AND pgshift_t." : "pgshift_t.") + m.columns[key[i]].quoted + " = pgshift_v.p" + std::to_string(i + 1);
    return w;
}

} // namespace

Statement build_insert_rows(const RelationMapping& m, std::size_t rows)
{
    Statement st;
    st.rows = rows;
    st.key = "IM" + std::to_string(m.generation) + ":" + std::to_string(rows);
    std::string cols;
    for (std::size_t i = 0; i < m.columns.size(); ++i) {
        cols += (i ? ", " : "") + m.columns[i].quoted;
        st.params.push_back({0, static_cast<std::uint16_t>(i)});
    }
    // Multi-row INSERT ... VALUES coerces each row to the target columns: no casts needed.
    std::string vals;
    for (std::size_t r = 0; r < rows; ++r) {
        vals += r ? ", (" : "(";
        for (std::size_t i = 0; i < m.columns.size(); ++i)
            vals += (i ? ", $" : "$") + std::to_string(r * m.columns.size() + i + 1);
        vals += ")";
    }
    st.sql = "INSERT INTO " + m.qualified + " (" + cols + ") VALUES " + vals;
    return st;
}

Statement build_update_rows(const RelationMapping& m, const protocol::TupleData& new_row, std::size_t rows)
{
    if (new_row.columns.size() != m.columns.size())
        throw ProtocolError("UPDATE of " + m.source_name + " does not match its Relation message's column count");
    auto key = key_columns(m);
    std::vector<std::uint16_t> set;
    std::string shape = "UM" + std::to_string(m.generation) + ":" + std::to_string(rows) + ":";
    for (std::size_t i = 0; i < m.columns.size(); ++i) {
        bool sent = new_row.columns[i].kind != ColumnKind::unchanged_toast;
        shape.push_back(sent ? 's' : 'u');
        if (sent && !m.columns[i].key)
            set.push_back(static_cast<std::uint16_t>(i));
    }
    Statement st;
    st.rows = rows;
    st.key = std::move(shape);
    // Per row: the key (from the old-key tuple), then the SET columns (from the new image).
    std::vector<std::uint16_t> cols = key;
    cols.insert(cols.end(), set.begin(), set.end());
    std::string v = values_list(m, cols, rows, st, 0);
    for (std::size_t i = 0; i < key.size(); ++i)
        st.params[i].tuple = 1;
    // values_list numbered one template; the writer repeats it per row.
    std::string assign;
    for (std::size_t i = 0; i < set.size(); ++i)
        assign += (i ? ", " : "") + m.columns[set[i]].quoted + " = pgshift_v.p" + std::to_string(key.size() + i + 1);
    if (assign.empty()) // nothing but the key was sent: still find (and lock) each row
        assign = m.columns[key[0]].quoted + " = pgshift_v.p1";
    st.sql = "UPDATE " + target_of(m) + " AS pgshift_t SET " + assign + " FROM " + v + " WHERE " + key_match(m, key);
    return st;
}

Statement build_delete_rows(const RelationMapping& m, std::size_t rows)
{
    auto key = key_columns(m);
    Statement st;
    st.rows = rows;
    st.key = "DM" + std::to_string(m.generation) + ":" + std::to_string(rows);
    std::string v = values_list(m, key, rows, st, 1);
    st.sql = "DELETE FROM " + target_of(m) + " AS pgshift_t USING " + v + " WHERE " + key_match(m, key);
    return st;
}

std::string build_copy(const RelationMapping& m)
{
    std::string cols;
    for (std::size_t i = 0; i < m.columns.size(); ++i)
        cols += (i ? ", " : "") + m.columns[i].quoted;
    return "COPY " + m.qualified + " (" + cols + ") FROM STDIN";
}

void append_copy_row(std::string& out, const protocol::TupleData& row)
{
    for (std::size_t i = 0; i < row.columns.size(); ++i) {
        if (i)
            out.push_back('\t');
        const auto& v = row.columns[i];
        if (v.kind == ColumnKind::null) {
            out += "\\N";
            continue;
        }
        for (char c : v.data) {
            switch (c) {
            case '\\': out += "\\\\"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            default: out.push_back(c);
            }
        }
    }
    out.push_back('\n');
}

} // namespace pgshift::apply
