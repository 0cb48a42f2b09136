// Net-change compaction (see compaction.hpp).
#include "pgshift/apply/compaction.hpp"

#include <algorithm>

namespace pgshift::apply {

using protocol::ColumnKind;
using protocol::OldKind;

Row own(const protocol::TupleData& t)
{
    Row r;
    r.reserve(t.columns.size());
    for (const auto& c : t.columns)
        r.push_back({c.kind, std::string(c.data)});
    return r;
}

protocol::TupleData view(const Row& r)
{
    protocol::TupleData t;
    t.columns.reserve(r.size());
    for (const auto& v : r)
        t.columns.push_back({v.kind, v.data});
    return t;
}

namespace {

/// `later` with its unchanged-TOAST columns taken from `earlier` where it has them.
Row merge(const Row& earlier, Row later)
{
    for (std::size_t i = 0; i < later.size() && i < earlier.size(); ++i)
        if (later[i].kind == ColumnKind::unchanged_toast && earlier[i].kind != ColumnKind::unchanged_toast)
            later[i] = earlier[i];
    return later;
}

bool has_unchanged(const Row& r)
{
    return std::any_of(r.begin(), r.end(), [](const Value& v) { return v.kind == ColumnKind::unchanged_toast; });
}

/// The SET shape of an update image: which columns are sent.
std::string shape_of(const Row& r)
{
    std::string s(r.size(), 's');
    for (std::size_t i = 0; i < r.size(); ++i)
        if (r[i].kind == ColumnKind::unchanged_toast)
            s[i] = 'u';
    return s;
}

void append_u32(std::string& s, std::size_t v)
{
    auto n = static_cast<std::uint32_t>(v);
    s.append(reinterpret_cast<const char*>(&n), sizeof n);
}

} // namespace

std::size_t Compactor::size_of(const Row& r)
{
    std::size_t n = 0;
    for (const auto& v : r)
        n += v.data.size() + sizeof(Value);
    return n;
}

bool Compactor::key_of(const std::vector<std::uint16_t>& key, const Row& row, const Row* fallback, Row& out,
                       std::string& lookup)
{
    out.assign(row.size(), Value{});
    for (auto col : key) {
        if (col >= row.size())
            return false;
        const Value* v = &row[col];
        if (v->kind == ColumnKind::unchanged_toast && fallback && col < fallback->size())
            v = &(*fallback)[col];
        if (v->kind != ColumnKind::text)
            return false; // NULL, unknown or binary: not a key we can compare
        out[col] = *v;
        append_u32(lookup, v->data.size());
        lookup += v->data;
    }
    return true;
}

std::size_t Compactor::table_order(const CompactTable& t)
{
    auto [it, inserted] = table_index_.emplace(t.id, tables_.size());
    if (inserted)
        tables_.push_back({t.id, {}});
    return it->second;
}

Compactor::Entry& Compactor::entry(const CompactTable& t, std::size_t order, Row key, const std::string& lookup)
{
    auto [it, inserted] = index_.emplace(lookup, entries_.size());
    if (inserted) {
        bytes_ += size_of(key) + lookup.size();
        entries_.push_back({t.id, order, Net::none, std::move(key), {}, nullptr});
    }
    return entries_[it->second];
}

void Compactor::pass_through(const CompactTable& t, RowOp op, std::vector<RowOp>& out)
{
    (void)out;
    auto order = table_order(t);
    auto& tab = tables_[order];
    if (tab.ordered.empty())
        ordered_.push_back(order);
    bytes_ += size_of(op.row) + size_of(op.old);
    op.distinct = false;
    tab.ordered.push_back(std::move(op));
}

void Compactor::add(const CompactTable& t, RowOp op, std::vector<RowOp>& out)
{
    // A new definition of a relation: what was gathered under the old one goes first.
    auto [def, fresh] = definition_.emplace(t.relid, t.id);
    if (!fresh && def->second != t.id) {
        flush(out);
        definition_[t.relid] = t.id;
    }
    if (!t.key) {
        pass_through(t, std::move(op), out);
        return;
    }
    auto give_up = [&] {
        flush(out);
        op.distinct = false;
        out.push_back(std::move(op));
    };
    if (op.old_kind == OldKind::full) {
        give_up();
        return;
    }
    auto order = table_order(t);
    std::string prefix;
    append_u32(prefix, order);
    const auto& key = *t.key;

    if (op.kind == OpKind::insert) {
        Row k;
        std::string lookup = prefix;
        if (!key_of(key, op.row, nullptr, k, lookup)) {
            give_up();
            return;
        }
        auto& e = entry(t, order, std::move(k), lookup);
        if (e.net != Net::none && e.net != Net::del) {
            give_up(); // the row exists already: not what a consistent source sends
            return;
        }
        e.net = e.net == Net::del ? Net::delins : Net::ins;
        bytes_ += size_of(op.row);
        e.row = std::move(op.row);
        e.txn = op.txn;
        return;
    }

    if (op.kind == OpKind::del) {
        Row k;
        std::string lookup = prefix;
        if (!key_of(key, op.old, nullptr, k, lookup)) {
            give_up();
            return;
        }
        auto& e = entry(t, order, std::move(k), lookup);
        if (e.net == Net::del) {
            give_up();
            return;
        }
        e.net = e.net == Net::ins ? Net::none : Net::del;
        e.row.clear();
        e.txn = op.txn;
        return;
    }

    // Update: the old key (sent when the key changed) and the new one.
    const Row* old_key_row = op.old_kind == OldKind::key ? &op.old : &op.row;
    Row k_old, k_new;
    std::string old_lookup = prefix, new_lookup = prefix;
    if (!key_of(key, *old_key_row, nullptr, k_old, old_lookup) ||
        !key_of(key, op.row, op.old_kind == OldKind::key ? &op.old : nullptr, k_new, new_lookup)) {
        give_up();
        return;
    }
    if (old_lookup == new_lookup) {
        auto& e = entry(t, order, std::move(k_old), old_lookup);
        switch (e.net) {
        case Net::del: give_up(); return; // updating a deleted row
        case Net::none: e.net = Net::upd; break;
        case Net::ins:
        case Net::upd:
        case Net::delins: break;
        }
        bytes_ += size_of(op.row);
        e.row = e.row.empty() ? std::move(op.row) : merge(e.row, std::move(op.row));
        e.txn = op.txn;
        return;
    }

    // A key change: a delete of the old key and an insert of the new one, which needs the whole
    // new image. Check everything before changing anything: giving up flushes the pending state.
    auto old_it = index_.find(old_lookup);
    auto new_it = index_.find(new_lookup);
    Net s_old = old_it == index_.end() ? Net::none : entries_[old_it->second].net;
    Net s_new = new_it == index_.end() ? Net::none : entries_[new_it->second].net;
    Row image = s_old == Net::ins || s_old == Net::upd || s_old == Net::delins
                    ? merge(entries_[old_it->second].row, std::move(op.row))
                    : std::move(op.row);
    if (has_unchanged(image) || s_old == Net::del || (s_new != Net::none && s_new != Net::del)) {
        op.row = std::move(image); // merged values are still the update's new values
        give_up();
        return;
    }
    {
        auto& e = entry(t, order, std::move(k_old), old_lookup);
        e.net = e.net == Net::ins ? Net::none : Net::del;
        e.row.clear();
        e.txn = op.txn;
    }
    auto& e = entry(t, order, std::move(k_new), new_lookup);
    e.net = e.net == Net::del ? Net::delins : Net::ins;
    bytes_ += size_of(image);
    e.row = std::move(image);
    e.txn = op.txn;
}

void Compactor::flush(std::vector<RowOp>& out)
{
    // Deletes, updates, inserts; grouped by table (and update shape) so that runs form.
    std::vector<std::size_t> dels, upds, inss;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
        switch (entries_[i].net) {
        case Net::none: break;
        case Net::del: dels.push_back(i); break;
        case Net::upd: upds.push_back(i); break;
        case Net::ins: inss.push_back(i); break;
        case Net::delins:
            dels.push_back(i);
            inss.push_back(i);
            break;
        }
    }
    auto by_table = [&](std::size_t a, std::size_t b) { return entries_[a].table_order < entries_[b].table_order; };
    std::stable_sort(dels.begin(), dels.end(), by_table);
    std::stable_sort(inss.begin(), inss.end(), by_table);
    std::vector<std::string> shapes(entries_.size());
    for (auto i : upds)
        shapes[i] = shape_of(entries_[i].row);
    std::stable_sort(upds.begin(), upds.end(), [&](std::size_t a, std::size_t b) {
        if (entries_[a].table_order != entries_[b].table_order)
            return entries_[a].table_order < entries_[b].table_order;
        return shapes[a] < shapes[b];
    });

    for (auto i : dels) {
        auto& e = entries_[i];
        RowOp op{OpKind::del, e.table, e.txn, OldKind::key, {}, e.net == Net::delins ? e.key : std::move(e.key), true};
        out.push_back(std::move(op));
    }
    for (auto i : upds) {
        auto& e = entries_[i];
        out.push_back({OpKind::update, e.table, e.txn, OldKind::key, std::move(e.row), std::move(e.key), true});
    }
    for (auto i : inss) {
        auto& e = entries_[i];
        out.push_back({OpKind::insert, e.table, e.txn, OldKind::none, std::move(e.row), {}, true});
    }
    for (auto order : ordered_)
        for (auto& op : tables_[order].ordered)
            out.push_back(std::move(op));

    entries_.clear();
    index_.clear();
    tables_.clear();
    table_index_.clear();
    ordered_.clear();
    bytes_ = 0;
}

} // namespace pgshift::apply
