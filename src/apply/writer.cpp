// Statement writer (see writer.hpp).
#include "pgshift/apply/writer.hpp"

#include "pgshift/common/errors.hpp"

#include <array>

namespace pgshift::apply {

namespace {

constexpr std::size_t k_run_max_ops = 1024;
constexpr std::size_t k_run_max_bytes = 1u << 20;
/// Rows per multi-row statement, largest first; what is left goes one row at a time.
constexpr std::array<std::size_t, 3> k_sizes = {64, 16, 4};
/// Parameters per statement, well under PostgreSQL's 65,535.
constexpr std::size_t k_max_params = 30000;

std::size_t bytes_of(const RowOp& op)
{
    std::size_t n = 0;
    for (const auto& v : op.row)
        n += v.data.size() + 1;
    for (const auto& v : op.old)
        n += v.data.size() + 1;
    return n;
}

std::string set_shape(const Row& r)
{
    std::string s(r.size(), 's');
    for (std::size_t i = 0; i < r.size(); ++i)
        if (r[i].kind == protocol::ColumnKind::unchanged_toast)
            s[i] = 'u';
    return s;
}

const RelationInfo& rel_of(const RowOp& op) { return *static_cast<const RelationInfo*>(op.table); }

/// Whether `op` may start a multi-row run.
bool can_run(const RowOp& op, const RelationInfo& rel)
{
    if (!rel.multirow)
        return false;
    return op.kind == OpKind::insert || (op.distinct && op.old_kind == protocol::OldKind::key);
}

} // namespace

bool Writer::joins_run(const RowOp& op, const RelationInfo& rel) const
{
    if (run_.empty() || run_.front().table != op.table || run_.front().kind != op.kind || !can_run(op, rel))
        return false;
    if (run_.size() >= k_run_max_ops || run_bytes_ >= k_run_max_bytes)
        return false;
    return op.kind != OpKind::update || set_shape(op.row) == run_shape_;
}

void Writer::add(pg::Pipeline& pl, RowOp op)
{
    const auto& rel = rel_of(op);
    if (!joins_run(op, rel))
        send_run(pl);
    if (!can_run(op, rel)) {
        send_single(pl, op, rel);
        return;
    }
    if (run_.empty() && op.kind == OpKind::update)
        run_shape_ = set_shape(op.row);
    run_bytes_ += bytes_of(op);
    run_.push_back(std::move(op));
}

void Writer::flush(pg::Pipeline& pl) { send_run(pl); }

void Writer::set_round_trip(std::chrono::microseconds rtt)
{
    const auto worth = static_cast<std::size_t>(2 * std::chrono::nanoseconds(rtt) / k_copy_saving_per_row);
    copy_min_rows_ = std::max(k_copy_min_rows, worth);
}

void Writer::send_run(pg::Pipeline& pl)
{
    if (run_.empty())
        return;
    const auto& rel = rel_of(run_.front());
    const auto& m = rel.mapping;
    auto kind = run_.front().kind;
    auto n = run_.size();
    if (kind == OpKind::insert && n >= copy_min_rows_) {
        send_copy(pl, rel);
    } else {
        std::size_t per_row = m.columns.size();
        if (kind != OpKind::insert) {
            std::size_t keys = 0, set = 0;
            for (std::size_t i = 0; i < m.columns.size(); ++i) {
                keys += m.columns[i].key;
                set += !m.columns[i].key && run_shape_[i] == 's';
            }
            per_row = kind == OpKind::del ? keys : keys + set;
        }
        for (std::size_t pos = 0; pos < n;) {
            std::size_t size = 1;
            for (auto s : k_sizes)
                if (s <= n - pos && s * per_row <= k_max_params) {
                    size = s;
                    break;
                }
            if (size == 1)
                send_single(pl, run_[pos], rel);
            else
                send_rows(pl, pos, size, rel);
            pos += size;
        }
    }
    run_.clear();
    run_bytes_ = 0;
}

namespace {

/// Appends one character per value: s(ent), u(nchanged TOAST), n(ULL).
void append_mask(std::string& key, const Row& r)
{
    for (const auto& v : r)
        key.push_back(v.kind == protocol::ColumnKind::unchanged_toast ? 'u'
                      : v.kind == protocol::ColumnKind::null          ? 'n'
                                                                      : 's');
}

} // namespace

template <typename Build>
const Writer::Prepared& Writer::prepared(pg::Pipeline& pl, const RowOp& tag, const RelationInfo& rel,
                                         std::uint32_t must_affect, Build&& build)
{
    const bool guard = guard_ && must_affect > 0;
    if (guard)
        key_.push_back('g');
    auto it = prepared_.find(key_);
    if (it == prepared_.end()) {
        Prepared p{build(), "s" + std::to_string(++statement_counter_), guard};
        if (guard)
            p.statement.sql = guarded(p.statement.sql, must_affect);
        pl.send_prepare(p.name, p.statement.sql, static_cast<int>(p.statement.params.size() * p.statement.rows),
                        {"PREPARE", tag.txn, &rel});
        it = prepared_.emplace(key_, std::move(p)).first;
    }
    return it->second;
}

void Writer::send_single(pg::Pipeline& pl, const RowOp& op, const RelationInfo& rel)
{
    const auto& m = rel.mapping;
    bool full = op.old_kind == protocol::OldKind::full;
    key_.assign(1, op.kind == OpKind::insert ? 'I' : op.kind == OpKind::update ? 'U' : 'D');
    key_ += std::to_string(m.generation);
    key_.push_back(static_cast<char>(op.old_kind) + 'a');
    switch (op.kind) {
    case OpKind::insert:
        send(pl, prepared(pl, op, rel, 0, [&] { return build_insert(m, view(op.row)); }), &op, 1, "INSERT", rel, 0);
        break;
    case OpKind::update: {
        append_mask(key_, op.row);
        if (full)
            append_mask(key_, op.old); // IS NULL tests are part of the shape
        auto build = [&] {
            auto row = view(op.row);
            return op.old_kind != protocol::OldKind::none ? build_update(m, row, view(op.old), true, full)
                                                          : build_update(m, row, row, false, false);
        };
        send(pl, prepared(pl, op, rel, 1, build), &op, 1, "UPDATE", rel, 1);
        break;
    }
    case OpKind::del:
        if (full)
            append_mask(key_, op.old);
        send(pl, prepared(pl, op, rel, 1, [&] { return build_delete(m, view(op.old), full); }), &op, 1, "DELETE", rel,
             1);
        break;
    }
}

void Writer::send_rows(pg::Pipeline& pl, std::size_t first, std::size_t count, const RelationInfo& rel)
{
    const auto& m = rel.mapping;
    const RowOp* ops = &run_[first];
    auto n = static_cast<std::uint32_t>(count);
    key_ = "M";
    key_.push_back(ops->kind == OpKind::insert ? 'I' : ops->kind == OpKind::update ? 'U' : 'D');
    key_ += std::to_string(m.generation) + ":" + std::to_string(count) + ":";
    switch (ops->kind) {
    case OpKind::insert:
        send(pl, prepared(pl, *ops, rel, 0, [&] { return build_insert_rows(m, count); }), ops, count, "INSERT", rel,
             0);
        break;
    case OpKind::update:
        key_ += run_shape_;
        send(pl, prepared(pl, *ops, rel, n, [&] { return build_update_rows(m, view(ops->row), count); }), ops, count,
             "UPDATE", rel, n);
        break;
    case OpKind::del:
        send(pl, prepared(pl, *ops, rel, n, [&] { return build_delete_rows(m, count); }), ops, count, "DELETE", rel,
             n);
        break;
    }
}

void Writer::send_copy(pg::Pipeline& pl, const RelationInfo& rel)
{
    scratch_.clear();
    for (const auto& op : run_)
        append_copy_row(scratch_, view(op.row));
    pl.copy_in(build_copy(rel.mapping), scratch_, {"COPY", run_.back().txn, &rel, 0});
    ++statements_;
    rows_ += run_.size();
}

void Writer::send(pg::Pipeline& pl, const Prepared& p, const RowOp* ops, std::size_t count, const char* op,
                  const RelationInfo& rel, std::uint32_t must_affect)
{
    const void* txn = ops[count - 1].txn;
    const auto& st = p.statement;
    // Text parameters must be NUL-terminated: copy them into one scratch buffer (libpq copies
    // them into its output buffer when sending).
    scratch_.clear();
    offsets_.clear();
    for (std::size_t r = 0; r < count; ++r) {
        for (const auto& param : st.params) {
            const Row& row = param.tuple == 0 ? ops[r].row : ops[r].old;
            if (param.column >= row.size())
                throw ProtocolError(std::string(op) + " on " + rel.mapping.source_name +
                                    ": a tuple has fewer columns than its Relation message");
            const auto& v = row[param.column];
            offsets_.push_back(v.kind == protocol::ColumnKind::null ? SIZE_MAX : scratch_.size());
            if (v.kind != protocol::ColumnKind::null)
                scratch_.append(v.data).push_back('\0');
        }
    }
    values_.assign(offsets_.size(), nullptr);
    for (std::size_t p = 0; p < offsets_.size(); ++p)
        values_[p] = offsets_[p] == SIZE_MAX ? nullptr : scratch_.data() + offsets_[p];
    // A guarded statement checks its rows itself (and returns one row, not a row count).
    pl.send_prepared(p.name, values_, {op, txn, &rel, p.guarded ? 0 : must_affect}, scratch_.size());
    ++statements_;
    rows_ += count;
}

} // namespace pgshift::apply
