// Reader: publication/slot setup, START_REPLICATION loop, transaction assembly and feedback.
#include "pgshift/reader/reader.hpp"

#include "pgshift/pg/connection.hpp"
#include "pgshift/protocol/frames.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace pgshift::reader {

namespace {

constexpr auto k_status_interval = std::chrono::seconds(1);
constexpr auto k_poll_timeout = std::chrono::milliseconds(100);
/// While something received is not confirmed yet, the reader looks at the apply side's
/// watermark this often even when the source sends nothing, and status updates may follow each
/// other this closely: when apply catches up, the source learns it within milliseconds (its
/// slot releases WAL, lag reads 0), not after the next keepalive.
constexpr auto k_confirm_poll = std::chrono::milliseconds(20);
constexpr auto k_status_min_gap = std::chrono::milliseconds(50);

} // namespace

int proto_version_for(int v)
{
    if (v >= 160000)
        return 4;
    if (v >= 150000)
        return 3;
    if (v >= 140000)
        return 2;
    return 1;
}

SlotInfo read_slot(pg::Connection& source, const std::string& slot_name)
{
    auto r = source.exec_params("SELECT confirmed_flush_lsn, restart_lsn, wal_status, active, plugin, database "
                              "FROM pg_replication_slots WHERE slot_name = $1",
                              {slot_name});
    SlotInfo s;
    if (r.rows() == 0)
        return s;
    s.exists = true;
    if (r.str(0, 4) != "pgoutput")
        throw SourceError("slot " + slot_name + " exists but uses plugin '" + r.str(0, 4) + "', not pgoutput",
                          false);
    s.confirmed_flush = Lsn::parse(r.get(0, 0)).value_or(Lsn());
    s.restart_lsn = Lsn::parse(r.get(0, 1)).value_or(Lsn());
    s.wal_status = r.str(0, 2);
    s.active = r.get(0, 3) == "t";
    return s;
}

Reader::Reader(const config::Config& cfg, queue::TxnQueue& queue, queue::Progress& progress, queue::Stats& stats)
    : cfg_(cfg), queue_(queue), progress_(progress), stats_(stats), spill_dir_(queue::spill_dir(cfg.apply.spill_dir)),
      txn_memory_limit_(std::max<std::size_t>(1 << 20, cfg.apply.max_queue_bytes / 4))
{
}

void Reader::connect()
{
    conn_ = std::make_unique<pg::ReplicationConnection>(cfg_.source.conninfo, "pgshift_" + cfg_.name + "_reader");
    auto id = conn_->identify_system();
    decode_ctx_.proto_version = proto_version_for(conn_->conn().server_version());
    server_version_ = conn_->conn().server_version();
    spdlog::info("source: system {} timeline {} at {}, server {}, pgoutput protocol {}", id.systemid, id.timeline,
                 id.xlogpos.str(), server_version_, decode_ctx_.proto_version);
}

Lsn Reader::create_slot()
{
    auto s = conn_->create_slot(cfg_.slot_name(), false);
    spdlog::info("created replication slot {} at consistent point {}", s.slot_name, s.consistent_point.str());
    return s.consistent_point;
}

pg::CreatedSlot Reader::create_slot_with_snapshot()
{
    auto s = conn_->create_slot(cfg_.slot_name(), true);
    spdlog::info("created replication slot {} at consistent point {}, exporting snapshot {}", s.slot_name,
                 s.consistent_point.str(), s.snapshot_name);
    return s;
}

void Reader::stream(Lsn start, const std::atomic<bool>& stop)
{
    // Large transactions are streamed before they commit (protocol 2+), so neither side holds
    // them in memory; they are spooled per xid (MessageLog) until Stream Commit.
    std::string options = "(proto_version '" + std::to_string(decode_ctx_.proto_version) +
                          "', publication_names " + pg::quote_literal(pg::quote_ident(cfg_.publication_name())) +
                          ", messages 'true'" +
                          (decode_ctx_.proto_version >= 2 && skip_below_.empty() ? ", streaming 'on'" : "") +
                          // Reverse direction: the source leaves out what pgshift applied there (rule 12).
                          (cfg_.is_reverse() && server_version_ >= 160000 ? ", origin 'none'" : "") + ")";
    if (!skip_below_.empty())
        spdlog::info("{} table(s) skip the changes their copy already holds; in-progress transactions are not "
                     "streamed by the source in this session",
                     skip_below_.size());
    conn_->start_replication(cfg_.slot_name(), start, options);
    spdlog::info("streaming from slot {} at {}", cfg_.slot_name(), start.str());
    last_flush_sent_ = start;
    progress_.received.store(std::max(progress_.received.load(), start.value()));
    maybe_send_status(true);

    while (!stop.load(std::memory_order_acquire)) {
        if (pending_) {
            // Apply is behind: do not read more, but keep the source informed (and alive).
            push_pending(stop);
            maybe_send_status(false);
            continue;
        }
        std::string_view data;
        const bool unconfirmed = progress_.received.load() > last_flush_sent_.value();
        auto st = conn_->receive(data, unconfirmed ? k_confirm_poll : k_poll_timeout);
        if (st == pg::ReplicationConnection::RecvStatus::end)
            throw SourceError("the source ended the replication stream", true);
        if (st == pg::ReplicationConnection::RecvStatus::data) {
            stats_.wal_received_bytes.fetch_add(data.size(), std::memory_order_relaxed);
            auto frame = protocol::decode_server_frame(data);
            if (auto* k = std::get_if<protocol::Keepalive>(&frame)) {
                progress_.server_end.store(std::max(progress_.server_end.load(), k->wal_end.value()));
                progress_.received.store(std::max(progress_.received.load(), k->wal_end.value()));
                // A keepalive past the write position we last reported: the walsender sends one
                // each time it goes idle while our reported write position lags what it sent
                // (WalSndWaitForWal), i.e. after every transaction of a steady load. Answer it,
                // as PostgreSQL's own apply worker does, so that it stops: one short status
                // instead of a keepalive per transaction and a wake-up of this thread for it.
                if (k->reply_requested || Lsn(progress_.received.load()) > last_write_sent_)
                    maybe_send_status(true);
            } else {
                auto& w = std::get<protocol::XLogData>(frame);
                if (w.wal_end.value() > progress_.received.load())
                    progress_.received.store(w.wal_end.value());
                try {
                    handle_xlogdata(w.payload);
                } catch (const ProtocolError& e) {
                    // Context for the operator and for a bug report: where in the stream it was.
                    throw ProtocolError(std::string(e.what()) + " (message at WAL " + w.wal_start.str() +
                                        ", stream received up to " + Lsn(progress_.received.load()).str() +
                                        (current_ ? ", in xid " + std::to_string(current_->xid.value) : "") + ")");
                }
            }
        }
        maybe_send_status(false);
    }
    // Graceful stop: the apply side has finished; report the final durable position.
    maybe_send_status(true);
    conn_->finish_copy();
    spdlog::info("replication stream closed; confirmed {}", last_flush_sent_.str());
    if (dropped_changes_)
        spdlog::info("{} change(s) of tables copied under a later snapshot were skipped", dropped_changes_);
}

bool Reader::drop_change(const protocol::Message& msg, std::string& rewritten) const
{
    if (skip_relids_.empty() || !current_)
        return false;
    auto below = [&](RelId relid) {
        auto it = skip_relids_.find(relid.value);
        return it != skip_relids_.end() && current_->commit_lsn < it->second;
    };
    if (auto* m = std::get_if<protocol::Insert>(&msg))
        return below(m->relid);
    if (auto* m = std::get_if<protocol::Update>(&msg))
        return below(m->relid);
    if (auto* m = std::get_if<protocol::Delete>(&msg))
        return below(m->relid);
    if (auto* m = std::get_if<protocol::Truncate>(&msg)) {
        std::vector<RelId> keep;
        for (auto r : m->relids)
            if (!below(r))
                keep.push_back(r);
        if (keep.size() == m->relids.size())
            return false;
        if (keep.empty())
            return true;
        // 'T', int32 count, int8 options, int32 relids (no xid outside a stream).
        auto be32 = [&](std::uint32_t v) {
            for (int shift = 24; shift >= 0; shift -= 8)
                rewritten.push_back(static_cast<char>((v >> shift) & 0xff));
        };
        rewritten = "T";
        be32(static_cast<std::uint32_t>(keep.size()));
        rewritten.push_back(static_cast<char>(m->flags));
        for (auto r : keep)
            be32(r.value);
        return false;
    }
    return false;
}

bool Reader::own_origin_change(const queue::Transaction& txn, const protocol::Message& msg)
{
    // Loop prevention (rule 12): the row changes of a transaction pgshift itself applied on this
    // server (tagged with one of this migration's origins, either direction) never go back.
    // PostgreSQL 16+ filters them at the source in the reverse direction (origin 'none'); this is
    // the filter for 15 and older, and a second line everywhere. Relation and Type messages are
    // kept (the source sends each relation's once per session, later transactions rely on it),
    // and the transaction itself stays in the stream, empty, so its position is applied and
    // confirmed like any other.
    if (txn.origin.empty() || !cfg_.is_own_origin(txn.origin))
        return false;
    auto type = protocol::type_of(msg);
    if (type == protocol::MsgType::relation || type == protocol::MsgType::type)
        return false;
    if (own_origin_skipped_++ == 0)
        spdlog::info("dropping the changes of transactions tagged with origin {}: pgshift wrote them (loop "
                     "prevention)",
                     txn.origin);
    return true;
}

std::unique_ptr<queue::Transaction> Reader::new_transaction(std::size_t memory_limit) const
{
    auto t = std::make_unique<queue::Transaction>(queue::MessageLog(spill_dir_, memory_limit));
    t->received_at = std::chrono::steady_clock::now();
    return t;
}

void Reader::complete(std::unique_ptr<queue::Transaction> txn)
{
    txn->messages.seal();
    // A spilled transaction holds little memory but a file descriptor: charge it enough that
    // the queue bound also bounds the number of open spill files.
    txn->bytes = sizeof(queue::Transaction) + txn->messages.memory_bytes() +
                 (txn->messages.spilled() ? k_spilled_charge : 0);
    pending_ = std::move(txn);
    progress_.in_transaction.store(true);
    std::atomic<bool> no_stop{false};
    push_pending(no_stop);
}

void Reader::handle_xlogdata(std::string_view payload)
{
    if (payload.empty())
        throw ProtocolError("empty XLogData payload");
    // Decoding validates every message here, so nothing malformed reaches the queue.
    auto msg = protocol::decode(payload, decode_ctx_);
    using protocol::MsgType;
    switch (protocol::type_of(msg)) {
    case MsgType::begin: {
        if (current_ || stream_xid_)
            throw ProtocolError("Begin inside a transaction or stream");
        auto& b = std::get<protocol::Begin>(msg);
        current_ = new_transaction(txn_memory_limit_);
        current_->xid = b.xid;
        current_->commit_lsn = b.final_lsn;
        current_->commit_ts = b.commit_ts;
        current_->decode = decode_ctx_;
        progress_.in_transaction.store(true);
        return;
    }
    case MsgType::commit: {
        if (!current_)
            throw ProtocolError("Commit outside a transaction");
        auto& c = std::get<protocol::Commit>(msg);
        if (c.commit_lsn != current_->commit_lsn)
            throw ProtocolError("Commit LSN " + c.commit_lsn.str() + " does not match Begin's " +
                                current_->commit_lsn.str() + " (xid " + std::to_string(current_->xid.value) + ")");
        current_->end_lsn = c.end_lsn;
        current_->commit_ts = c.commit_ts;
        complete(std::move(current_));
        return;
    }
    case MsgType::origin: {
        auto& o = std::get<protocol::Origin>(msg);
        if (stream_xid_)
            streams_.at(*stream_xid_).txn->origin = std::string(o.name);
        else if (current_)
            current_->origin = std::string(o.name);
        else
            throw ProtocolError("Origin outside a transaction");
        return;
    }
    case MsgType::relation:
    case MsgType::type:
    case MsgType::insert:
    case MsgType::update:
    case MsgType::del:
    case MsgType::truncate: {
        if (stream_xid_) {
            auto& st = streams_.at(*stream_xid_);
            // Inside a stream every change carries the xid of its (sub)transaction; remember
            // where each subtransaction starts, so that its abort can cut it out.
            auto sub = std::visit([](const auto& m) -> std::optional<Xid> {
                if constexpr (requires { m.xid; })
                    if constexpr (std::is_same_v<decltype(m.xid), std::optional<Xid>>)
                        return m.xid;
                return std::nullopt;
            }, msg);
            if (sub && sub->value != *stream_xid_ &&
                std::none_of(st.subxacts.begin(), st.subxacts.end(),
                             [&](const auto& p) { return p.first == sub->value; }))
                st.subxacts.emplace_back(sub->value, st.txn->messages.position());
            if (own_origin_change(*st.txn, msg))
                return;
            st.txn->messages.append(payload);
        } else if (current_) {
            if (auto* rel = std::get_if<protocol::Relation>(&msg); rel && !skip_below_.empty()) {
                auto name = std::string(rel->nspname.empty() ? "pg_catalog" : rel->nspname) + "." +
                            std::string(rel->relname);
                if (auto it = skip_below_.find(name); it != skip_below_.end())
                    skip_relids_[rel->relid.value] = it->second;
                else
                    skip_relids_.erase(rel->relid.value);
            }
            if (own_origin_change(*current_, msg))
                return;
            std::string rewritten;
            if (drop_change(msg, rewritten)) {
                ++dropped_changes_;
                return;
            }
            current_->messages.append(rewritten.empty() ? payload : std::string_view(rewritten));
        } else {
            throw ProtocolError(std::string("message '") + payload[0] + "' outside a transaction");
        }
        return;
    }
    case MsgType::message:
        // Logical decoding messages (pg_logical_emit_message) carry nothing to apply.
        return;
    case MsgType::stream_start: {
        auto& s = std::get<protocol::StreamStart>(msg);
        if (stream_xid_ || current_)
            throw ProtocolError("Stream Start inside a transaction or stream");
        auto it = streams_.find(s.xid.value);
        if (it == streams_.end()) {
            if (!s.first_segment)
                throw ProtocolError("Stream Start for xid " + std::to_string(s.xid.value) +
                                    " continues a stream whose first segment was never received");
            Stream st{new_transaction(k_stream_memory_limit), {}};
            st.txn->xid = s.xid;
            it = streams_.emplace(s.xid.value, std::move(st)).first;
        }
        stream_xid_ = s.xid.value;
        decode_ctx_.in_stream = true;
        return;
    }
    case MsgType::stream_stop:
        if (!stream_xid_)
            throw ProtocolError("Stream Stop outside a stream");
        stream_xid_.reset();
        decode_ctx_.in_stream = false;
        return;
    case MsgType::stream_commit: {
        auto& c = std::get<protocol::StreamCommit>(msg);
        auto it = streams_.find(c.xid.value);
        if (stream_xid_ || current_ || it == streams_.end())
            throw ProtocolError("Stream Commit for xid " + std::to_string(c.xid.value) + " out of place");
        auto txn = std::move(it->second.txn);
        streams_.erase(it);
        txn->commit_lsn = c.commit_lsn;
        txn->end_lsn = c.end_lsn;
        txn->commit_ts = c.commit_ts;
        txn->decode = decode_ctx_;
        txn->decode.in_stream = true; // its messages carry xid prefixes
        complete(std::move(txn));
        return;
    }
    case MsgType::stream_abort: {
        auto& a = std::get<protocol::StreamAbort>(msg);
        auto it = streams_.find(a.xid.value);
        if (stream_xid_ || current_)
            throw ProtocolError("Stream Abort inside a transaction or stream");
        if (it == streams_.end())
            return; // nothing of it was streamed to us
        if (a.subxid.value == a.xid.value) {
            spdlog::debug("streamed xid {} aborted: {} messages discarded", a.xid.value,
                          it->second.txn->messages.count());
            streams_.erase(it);
            return;
        }
        abort_subtransaction(it->second, a.subxid.value);
        return;
    }
    default:
        // Two-phase messages are not requested; receiving one is a protocol error.
        throw ProtocolError(std::string("unexpected pgoutput message '") + payload[0] + "' (not requested)");
    }
}

void Reader::abort_subtransaction(Stream& st, std::uint32_t subxid)
{
    auto pos = std::find_if(st.subxacts.begin(), st.subxacts.end(),
                            [&](const auto& p) { return p.first == subxid; });
    if (pos == st.subxacts.end())
        return; // the subtransaction streamed no change
    // Everything from the subtransaction's first change on belongs to it or to subtransactions
    // started after it (nested ones). Relation and Type messages in that range are kept: the
    // source considers them sent for this transaction and will not repeat them.
    auto& log = st.txn->messages;
    log.seal();
    std::vector<std::string> keep;
    {
        auto c = log.cursor();
        std::string_view p;
        while (c.position() < pos->second && c.next(p)) {
        }
        while (c.next(p))
            if (p[0] == static_cast<char>(protocol::MsgType::relation) ||
                p[0] == static_cast<char>(protocol::MsgType::type))
                keep.emplace_back(p);
    }
    auto before = log.count();
    log.truncate(pos->second);
    for (const auto& k : keep)
        log.append(k);
    spdlog::debug("subtransaction {} of streamed xid {} aborted: {} messages discarded", subxid,
                  st.txn->xid.value, before - log.count());
    st.subxacts.erase(pos, st.subxacts.end());
}

void Reader::push_pending(const std::atomic<bool>& stop)
{
    if (!pending_)
        return;
    auto end = pending_->end_lsn;
    auto bytes = pending_->bytes;
    auto ts = pending_->commit_ts.micros;
    auto seq = progress_.pushed_seq.load() + 1;
    progress_.commit_ts_ring[seq % progress_.ring_size].store(ts, std::memory_order_release);
    if (queue_.try_push(pending_)) {
        progress_.pushed_seq.store(seq, std::memory_order_release);
        progress_.pushed_end.store(end.value());
        progress_.in_transaction.store(false);
        return;
    }
    if (!stop.load())
        queue_.wait_for_space(bytes, k_poll_timeout);
}

void Reader::maybe_send_status(bool force, bool reply_requested)
{
    auto now = std::chrono::steady_clock::now();
    Lsn flush = std::max(progress_.confirmable_flush(), last_flush_sent_);
    if (!force && flush == last_flush_sent_ && now - last_status_ < k_status_interval)
        return;
    if (!force && now - last_status_ < k_status_min_gap)
        return; // bound the rate of updates while the watermark moves
    protocol::StandbyStatus s;
    s.write = Lsn(progress_.received.load());
    s.flush = flush;
    s.apply = std::max(Lsn(progress_.written_end.load()), flush);
    if (s.write < s.flush)
        s.write = s.flush;
    s.client_time = pg_now();
    s.reply_requested = reply_requested;
    conn_->send(protocol::encode_standby_status(s));
    last_write_sent_ = s.write;
    if (flush != last_flush_sent_)
        spdlog::debug("confirmed flush {}", flush.str());
    last_flush_sent_ = flush;
    progress_.confirmed.store(flush.value(), std::memory_order_release);
    last_status_ = now;
}

} // namespace pgshift::reader
