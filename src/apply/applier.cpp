// Apply: replays source transactions on the target through one pipelined connection, exactly once.
#include "pgshift/apply/applier.hpp"

#include "pgshift/common/clock.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>

namespace pgshift::apply {

namespace {

constexpr std::size_t k_max_in_flight = 1000; ///< statements sent before results are read
constexpr auto k_durable_interval = std::chrono::milliseconds(500);
constexpr std::size_t k_group_max_transactions = 256; ///< source transactions per target transaction
constexpr std::size_t k_group_max_bytes = 8 << 20;

/// Session settings of rule 8, as libpq `options`.
constexpr const char* k_session_options = "-c session_replication_role=replica -c synchronous_commit=off "
                                          "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
                                          "-c TimeZone=UTC -c search_path=pg_catalog";


[[noreturn]] void throw_target(const std::string& context, const pg::PgError& e)
{
    throw TargetError(context + ": " + e.what(), e.retryable());
}

std::string change_context(const queue::Transaction& txn)
{
    return "while applying xid " + std::to_string(txn.xid.value) + " (commit " + txn.commit_lsn.str() + ")";
}

} // namespace

Applier::Applier(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats,
                 int worker)
    : cfg_(cfg), queue_(queue), progress_(progress), stats_(stats), origin_(cfg.origin_name(worker))
{
}

Lsn Applier::connect()
{
    auto conninfo = pg::conninfo_with(
        cfg_.target.conninfo,
        {{"application_name", origin_}, {"options", k_session_options}, {"client_encoding", "UTF8"}});
    try {
        conn_ = std::make_unique<pg::Connection>(conninfo);

        // End backends a previous (crashed) run left behind, and wait until they are gone: they
        // hold our origin, and one may still be committing a transaction.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        for (;;) {
            auto r = conn_->exec_params("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                                        {origin_});
            if (r.rows() == 0)
                break;
            spdlog::warn("ended {} stale target session(s) of origin {}", r.rows(), origin_);
            if (std::chrono::steady_clock::now() > deadline)
                throw TargetError("stale sessions of origin " + origin_ + " do not go away", true);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }

        // Read-only until ensure_origin(): a start that is refused leaves nothing behind.
        auto p = conn_->exec_params("SELECT CASE WHEN pg_replication_origin_oid($1) IS NOT NULL "
                                    "THEN pg_replication_origin_progress($1, true) END",
                                    {origin_});
        Lsn durable = p.is_null(0, 0) ? Lsn() : Lsn::parse(p.get(0, 0)).value_or(Lsn());
        progress_.durable.store(durable.value());
        return durable;
    } catch (const pg::PgError& e) {
        throw_target("target setup failed", e);
    }
}

void Applier::ensure_origin()
{
    try {
        auto exists = conn_->exec_params("SELECT pg_replication_origin_oid($1)", {origin_});
        if (exists.is_null(0, 0)) {
            conn_->exec_params("SELECT pg_replication_origin_create($1)", {origin_});
            spdlog::info("created replication origin {} on the target", origin_);
        }
    } catch (const pg::PgError& e) {
        throw_target("could not create replication origin " + origin_, e);
    }
}

void Applier::advance_origin(Lsn lsn)
{
    try {
        conn_->exec_params("SELECT pg_replication_origin_advance($1, $2)", {origin_, lsn.str()});
    } catch (const pg::PgError& e) {
        throw_target("could not initialise origin " + origin_, e);
    }
    progress_.durable.store(lsn.value());
}

void Applier::begin_session(Lsn resume)
{
    try {
        conn_->exec_params("SELECT pg_replication_origin_session_setup($1)", {origin_});
    } catch (const pg::PgError& e) {
        throw_target("could not set up replication origin " + origin_, e);
    }
    resume_ = resume;
    progress_.durable.store(std::max(progress_.durable.load(), resume.value()));
    last_durable_check_ = std::chrono::steady_clock::now();
    spdlog::info("apply: origin {} resumes after {}", origin_, resume.str());
}

void Applier::run(const std::atomic<bool>& stop, const std::atomic<bool>& paused)
{
    stop_ = &stop;
    while (!stop.load(std::memory_order_acquire)) {
        std::vector<std::unique_ptr<queue::Transaction>> group;
        if (paused.load(std::memory_order_acquire))
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        else if (auto first = queue_.pop(std::chrono::milliseconds(100))) {
            // Group what is already queued (never wait for more): fewer target commits.
            std::size_t bytes = first->bytes;
            group.push_back(std::move(first));
            while (group.size() < k_group_max_transactions && bytes < k_group_max_bytes) {
                auto more = queue_.pop(std::chrono::milliseconds(0));
                if (!more)
                    break;
                bytes += more->bytes;
                group.push_back(std::move(more));
            }
            try {
                apply(group);
            } catch (const Interrupted&) {
                spdlog::info("stop requested: rolled back the transaction being applied (it is applied again "
                             "after the restart)");
                break;
            }
        }
        auto now = std::chrono::steady_clock::now();
        bool behind = progress_.durable.load() < progress_.written_end.load();
        if (behind && (group.empty() || now - last_durable_check_ >= k_durable_interval))
            refresh_durable();
    }
    refresh_durable();
}

void Applier::refresh_durable()
{
    try {
        // flush = true: XLogFlush up to our last commit, so this is a durable watermark (rule 3).
        auto r = conn_->exec("SELECT pg_replication_origin_session_progress(true)");
        if (!r.is_null(0, 0))
            if (auto l = Lsn::parse(r.get(0, 0)); l && l->value() > progress_.durable.load())
                progress_.durable.store(l->value());
    } catch (const pg::PgError& e) {
        throw_target("could not read origin progress", e);
    }
    last_durable_check_ = std::chrono::steady_clock::now();
}

std::shared_ptr<RelationMapping> Applier::resolve(const protocol::Relation& rel)
{
    std::string nsp = rel.nspname.empty() ? "pg_catalog" : std::string(rel.nspname);
    auto qualified = pg::quote_ident(nsp) + "." + pg::quote_ident(rel.relname);
    // For each target column: does its type (a domain's base type) have a default btree
    // opclass, so that '=' works? Arrays, composites and ranges are compared as text.
    auto r = conn_->exec_params(
        "SELECT c.relkind, a.attname, a.attgenerated <> '', "
        "  bt.typtype IN ('b', 'e') AND bt.typcategory <> 'A' AND EXISTS ("
        "    SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod "
        "    WHERE am.amname = 'btree' AND oc.opcdefault "
        "      AND oc.opcintype = CASE WHEN bt.typtype = 'e' THEN 'anyenum'::regtype ELSE bt.oid END) "
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
            cols.push_back({r.str(i, 1), r.get(i, 3) == "t", r.get(i, 2) == "t"});
    return std::make_shared<RelationMapping>(map_relation(rel, cols, r.get(0, 0) == "p", ++generation_));
}

/// One transaction's pipeline on the target: sends statements, reads their results in order,
/// and remembers the first failure instead of throwing, so the pipeline is always drained to
/// its sync point before the transaction is rolled back.
class Pipeline {
public:
    Pipeline(pg::Connection& conn, const config::Config& cfg) : conn_(conn), c_(conn.raw()), cfg_(cfg) {}

    /// What a result read from the pipeline must be.
    struct Expect {
        const char* op = "";                    ///< "INSERT", "BEGIN", ... for messages
        std::shared_ptr<RelationMapping> rel;   ///< for row changes: missing-row check and messages
        const queue::Transaction* txn = nullptr; ///< the source transaction, for messages
    };

    /// The source transaction whose statements are being sent (error context).
    void set_transaction(const queue::Transaction* txn) { txn_ = txn; }

    void enter()
    {
        if (!PQenterPipelineMode(c_))
            conn_.fail("could not enter pipeline mode");
        active_ = true;
    }

    void send_plain(const std::string& sql, const std::vector<std::string>& params, const char* op)
    {
        std::vector<const char*> v;
        for (const auto& p : params)
            v.push_back(p.c_str());
        if (!PQsendQueryParams(c_, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0))
            conn_.fail(std::string("could not send ") + op);
        expects_.push_back({op, nullptr, txn_});
    }

    void send_prepare(const std::string& name, const Statement& st)
    {
        if (!PQsendPrepare(c_, name.c_str(), st.sql.c_str(), static_cast<int>(st.params.size()), nullptr))
            conn_.fail("could not send PREPARE");
        expects_.push_back({"PREPARE", nullptr, txn_});
    }

    void send_prepared(const std::string& name, const std::vector<const char*>& values, const char* op,
                       std::shared_ptr<RelationMapping> rel)
    {
        if (!PQsendQueryPrepared(c_, name.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr,
                                 0))
            conn_.fail(std::string("could not send ") + op);
        expects_.push_back({op, std::move(rel), txn_});
        if (expects_.size() >= k_max_in_flight) {
            // Bound the pipeline: ask the server to flush, then read half of the results.
            if (!PQsendFlushRequest(c_) || PQflush(c_) != 0)
                conn_.fail("could not flush the pipeline");
            while (expects_.size() > k_max_in_flight / 2)
                read_one();
        }
    }

    /// Sends a sync point and reads every outstanding result up to it.
    void sync()
    {
        if (!PQpipelineSync(c_))
            conn_.fail("could not send pipeline sync");
        while (!expects_.empty())
            read_one();
        PGresult* res = PQgetResult(c_);
        if (!res)
            conn_.fail("pipeline sync missing");
        if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
            conn_.fail("pipeline sync missing", res); // e.g. FATAL 57P01: classified by its SQLSTATE
        PQclear(res);
    }

    /// Leaves pipeline mode (after sync()), e.g. to run a catalog query inside the transaction.
    void leave()
    {
        if (active_ && !PQexitPipelineMode(c_))
            conn_.fail("could not leave pipeline mode");
        active_ = false;
    }

    [[nodiscard]] bool active() const { return active_; }
    [[nodiscard]] const std::string& failure() const { return failure_; }
    [[nodiscard]] bool retryable() const { return retryable_; }

    /// Rolls back after a failure and throws it with context.
    [[noreturn]] void abort()
    {
        if (!active_)
            enter();
        send_plain("ROLLBACK", {}, "ROLLBACK");
        sync();
        leave();
        throw TargetError(failure_, retryable_);
    }

private:
    void read_one()
    {
        Expect e = std::move(expects_.front());
        expects_.pop_front();
        PGresult* res = PQgetResult(c_);
        if (!res)
            conn_.fail("pipeline ended early");
        auto st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR) {
            if (failure_.empty()) {
                const char* ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                pg::PgError pe(PQresultErrorMessage(res), ss ? ss : "",
                               PQstatus(c_) != CONNECTION_OK || pg::severity_ends_session(res));
                retryable_ = pe.retryable();
                std::string msg = PQresultErrorMessage(res);
                while (!msg.empty() && msg.back() == '\n')
                    msg.pop_back();
                failure_ = std::string(e.op) + (e.rel ? " on " + e.rel->source_name : "") + ": " + msg +
                           (e.txn ? " " + change_context(*e.txn) : "");
            }
        } else if (st == PGRES_PIPELINE_ABORTED) {
            // follows an earlier error, which is already recorded
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (failure_.empty()) {
                failure_ = std::string(e.op) + ": unexpected result status " + PQresStatus(st) +
                           (e.txn ? " " + change_context(*e.txn) : "");
                retryable_ = true; // libpq out of step with us: a new session starts clean
            }
        } else if (e.rel && std::strcmp(e.op, "INSERT") != 0) {
            const char* n = PQcmdTuples(res);
            if (*n && std::strtoull(n, nullptr, 10) == 0 && failure_.empty()) {
                // Missing rows are divergence (rule 9).
                std::string what = std::string(e.op) + " on " + e.rel->source_name +
                                   " found no row (the target diverged from the source)" +
                                   (e.txn ? " " + change_context(*e.txn) : "");
                if (cfg_.apply.on_missing_row == config::MissingRowPolicy::error)
                    failure_ = what;
                else
                    spdlog::warn("{}; skipped (apply.on_missing_row = skip)", what);
            }
        }
        PQclear(res);
        if (PGresult* extra = PQgetResult(c_)) { // each query ends with a NULL result
            PQclear(extra);
            conn_.fail("pipeline out of step");
        }
    }

    pg::Connection& conn_;
    PGconn* c_;
    const config::Config& cfg_;
    const queue::Transaction* txn_ = nullptr;
    std::deque<Expect> expects_;
    bool active_ = false;
    std::string failure_;
    bool retryable_ = false;
};

namespace {

RelId relid_of(const protocol::Message& m)
{
    return std::visit(
        [](const auto& x) -> RelId {
            if constexpr (requires { x.relid; })
                return x.relid;
            else
                return RelId{};
        },
        m);
}

} // namespace

std::shared_ptr<RelationMapping> Applier::mapping_for(RelId relid, const queue::Transaction& txn, Pipeline& pl)
{
    auto it = relations_.find(relid);
    if (it == relations_.end())
        throw ProtocolError("change for relation " + std::to_string(relid.value) +
                            " without a preceding Relation message " + change_context(txn));
    auto& known = it->second;
    if (!known.mapping) {
        // The catalog lookup needs a plain round trip inside the open transaction: settle the
        // pipeline first (stopping at any failure already reported).
        if (pl.active()) {
            pl.sync();
            if (!pl.failure().empty())
                pl.abort();
            pl.leave();
        }
        auto msg = protocol::decode(known.payload, known.decode);
        known.mapping = resolve(std::get<protocol::Relation>(msg));
    }
    return known.mapping;
}

void Applier::apply(const std::vector<std::unique_ptr<queue::Transaction>>& group)
{
    bool written = execute(group);
    const auto& last = *group.back();
    if (written) {
        // written_end before handled_end: Progress::confirmable_flush() relies on this order.
        progress_.written_end.store(last.end_lsn.value());
        progress_.handled_end.store(last.end_lsn.value());
        auto now = std::chrono::system_clock::now();
        for (const auto& txn : group)
            if (txn->commit_lsn >= resume_) {
                stats_.transactions_applied.fetch_add(1, std::memory_order_relaxed);
                stats_.observe_latency(std::chrono::duration<double>(now - to_system(txn->commit_ts)).count());
            }
    } else {
        // Already applied before a restart (rule 4), or nothing to write.
        progress_.handled_end.store(std::max(progress_.handled_end.load(), last.end_lsn.value()));
    }
    progress_.applied_seq.fetch_add(group.size(), std::memory_order_acq_rel);
}

void Applier::execute_one(Pipeline& pl, const queue::Transaction& txn, bool& began, ChangeCounts& counts)
{
    bool skip = txn.commit_lsn < resume_;
    if (skip)
        spdlog::debug("skipping xid {} (commit {} < resume point {})", txn.xid.value, txn.commit_lsn.str(),
                      resume_.str());
    pl.set_transaction(&txn);
    auto cursor = txn.messages.cursor();
    std::string_view payload;
    std::uint64_t seen = 0;
    while (cursor.next(payload)) {
        // A large transaction can take minutes: a stop request rolls it back instead of
        // waiting (nothing of it is committed, so it is simply received again later).
        if (++seen % 4096 == 0 && stop_ && stop_->load(std::memory_order_acquire)) {
            if (began) {
                if (!pl.active())
                    pl.enter();
                pl.send_plain("ROLLBACK", {}, "ROLLBACK");
            }
            if (pl.active()) {
                pl.sync();
                pl.leave();
            }
            throw Interrupted();
        }
        auto msg = protocol::decode(payload, txn.decode);
        if (auto* rel = std::get_if<protocol::Relation>(&msg)) {
            // Relations take effect in stream order, also in skipped transactions. They are
            // resolved against the target only when a change uses them: for a partition
            // published through its root, PostgreSQL sends the partition's Relation message
            // too, although every change names the root (which is all the target needs).
            relations_[rel->relid] = KnownRelation{std::string(payload), txn.decode, nullptr};
            continue;
        }
        if (skip)
            continue;
        if (std::holds_alternative<protocol::Insert>(msg) || std::holds_alternative<protocol::Update>(msg) ||
            std::holds_alternative<protocol::Delete>(msg) || std::holds_alternative<protocol::Truncate>(msg))
            send_change(pl, txn, msg, began, counts);
        // Type messages need nothing (types resolve by name on the target); logical messages
        // carry nothing to apply.
    }
}

void Applier::send_change(Pipeline& pl, const queue::Transaction& txn, const protocol::Message& msg, bool& began,
                          ChangeCounts& counts)
{
    // Resolve the relations first: a catalog lookup settles (and leaves) the pipeline.
    auto* tr = std::get_if<protocol::Truncate>(&msg);
    std::vector<std::shared_ptr<RelationMapping>> rels;
    if (tr)
        for (auto relid : tr->relids)
            rels.push_back(mapping_for(relid, txn, pl));
    else
        rels.push_back(mapping_for(relid_of(msg), txn, pl));

    if (!pl.active())
        pl.enter();
    if (!began) {
        pl.send_plain("BEGIN", {}, "BEGIN");
        // Force an xid: a transaction without one writes no commit record, so its origin
        // progress would be lost (rule 1).
        pl.send_plain("SELECT pg_current_xact_id()", {}, "pg_current_xact_id");
        began = true;
    }

    if (tr) {
        // Listed relations only; partitioned ones include their partitions. CASCADE is ignored,
        // as PostgreSQL's own apply does: the source listed every table it hit.
        std::string sql = "TRUNCATE ";
        for (std::size_t i = 0; i < rels.size(); ++i)
            sql += (i ? ", " : "") + std::string(rels[i]->partitioned ? "" : "ONLY ") + rels[i]->qualified;
        if (tr->flags & protocol::Truncate::k_restart_identity)
            sql += " RESTART IDENTITY";
        pl.send_plain(sql, {}, "TRUNCATE");
        ++counts.truncates;
        return;
    }

    auto m = std::move(rels.front());
    const protocol::TupleData* tuples[2] = {nullptr, nullptr}; // new row, old row or key
    Statement st;
    const char* op = "";
    if (auto* ins = std::get_if<protocol::Insert>(&msg)) {
        tuples[0] = &ins->new_tuple;
        st = build_insert(*m, ins->new_tuple);
        op = "INSERT";
        ++counts.inserts;
    } else if (auto* up = std::get_if<protocol::Update>(&msg)) {
        bool from_old = up->old_kind != protocol::OldKind::none;
        tuples[0] = &up->new_tuple;
        tuples[1] = from_old ? &up->old_tuple : &up->new_tuple;
        st = build_update(*m, up->new_tuple, *tuples[1], from_old, up->old_kind == protocol::OldKind::full);
        op = "UPDATE";
        ++counts.updates;
    } else {
        const auto& del = std::get<protocol::Delete>(msg);
        tuples[1] = &del.old_tuple;
        st = build_delete(*m, del.old_tuple, del.old_kind == protocol::OldKind::full);
        op = "DELETE";
        ++counts.deletes;
    }

    auto it = prepared_.find(st.key);
    if (it == prepared_.end()) {
        auto name = "s" + std::to_string(++statement_counter_);
        pl.send_prepare(name, st);
        it = prepared_.emplace(st.key, name).first;
    }
    // Text parameters must be NUL-terminated: copy them into one scratch buffer (libpq copies
    // them into its output buffer when sending).
    scratch_.clear();
    offsets_.clear();
    values_.assign(st.params.size(), nullptr);
    for (const auto& param : st.params) {
        const auto& cv = tuples[param.tuple]->columns.at(param.column);
        offsets_.push_back(cv.kind == protocol::ColumnKind::null ? SIZE_MAX : scratch_.size());
        if (cv.kind != protocol::ColumnKind::null)
            scratch_.append(cv.data).push_back('\0');
    }
    for (std::size_t p = 0; p < st.params.size(); ++p)
        values_[p] = offsets_[p] == SIZE_MAX ? nullptr : scratch_.data() + offsets_[p];
    pl.send_prepared(it->second, values_, op, std::move(m));
}

bool Applier::execute(const std::vector<std::unique_ptr<queue::Transaction>>& group)
{
    Pipeline pl(*conn_, cfg_);
    bool began = false;
    ChangeCounts counts;
    const auto& last = *group.back();

    try {
        for (const auto& txn_ptr : group)
            execute_one(pl, *txn_ptr, began, counts);

        if (!began) {
            if (pl.active())
                pl.leave();
            return false;
        }
        // The group commits as one target transaction recording the last source transaction's end:
        // the target still only ever shows states the source had at some commit.
        pl.set_transaction(&last);
        pl.send_plain("SELECT pg_replication_origin_xact_setup($1, $2)",
                      {last.end_lsn.str(), format_timestamptz(last.commit_ts)}, "pg_replication_origin_xact_setup");
        pl.sync();
        if (!pl.failure().empty()) {
            // A failed PREPARE leaves its key unprepared: forget the statements of this session.
            prepared_.clear();
            pl.abort();
        }
        // COMMIT only once every result was checked: a missing row must not be committed.
        pl.send_plain("COMMIT", {}, "COMMIT");
        pl.sync();
        if (!pl.failure().empty())
            throw TargetError(pl.failure(), pl.retryable());
        pl.leave();
    } catch (const pg::PgError& e) {
        throw_target(change_context(last), e);
    }
    stats_.changes_insert.fetch_add(counts.inserts, std::memory_order_relaxed);
    stats_.changes_update.fetch_add(counts.updates, std::memory_order_relaxed);
    stats_.changes_delete.fetch_add(counts.deletes, std::memory_order_relaxed);
    stats_.changes_truncate.fetch_add(counts.truncates, std::memory_order_relaxed);
    return true;
}

} // namespace pgshift::apply
