// A point where both servers show the same rows (see common_point.hpp).
#include "pgshift/verify/common_point.hpp"

#include "pgshift/pg/replication.hpp"

#include <stdexcept>
#include <thread>

namespace pgshift::verify {

namespace {

std::unique_ptr<pg::Connection> session(const std::string& conninfo, const std::string& app)
{
    auto c = std::make_unique<pg::Connection>(
        pg::conninfo_with(conninfo, {{"application_name", app}, {"options", pg::k_no_timeouts}}));
    pg::no_version_timeouts(*c);
    return c;
}

} // namespace

CommonPoint::CommonPoint(const std::string& conninfo, const std::string& app, const std::string& slot,
                         apply::Hold& hold, std::unique_lock<std::mutex> owner)
    : conninfo_(conninfo), app_(app), hold_(hold), owner_(std::move(owner))
{
    try {
        {
            auto c = session(conninfo_, app_);
            auto p = Lsn::parse(c->exec("SELECT pg_current_wal_lsn()").get(0, 0));
            if (!p)
                throw std::runtime_error("pg_current_wal_lsn() returned no position");
            hold_.at.store(p->value(), std::memory_order_release);
        }
        repl_ = std::make_unique<pg::ReplicationConnection>(conninfo_, app_);
        auto made = repl_->create_slot(slot, true, true);
        at_ = made.consistent_point;
        snapshot_ = made.snapshot_name;
        hold_.at.store(at_.value(), std::memory_order_release);
    } catch (...) {
        release();
        throw;
    }
}

CommonPoint::~CommonPoint()
{
    release();
}

void CommonPoint::import(pg::Connection& c) const
{
    c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    c.exec("SET TRANSACTION SNAPSHOT " + c.quote_literal(snapshot_));
}

void CommonPoint::end_export()
{
    repl_.reset(); // the temporary slot goes with its session
}

void CommonPoint::reach(const std::atomic<bool>& stop, std::chrono::milliseconds timeout,
                        const std::string& why_stopped)
{
    session(conninfo_, app_)->exec_params("SELECT pg_logical_emit_message(true, $1, $2)", {app_, at_.str()});
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (hold_.reached.load(std::memory_order_acquire) != at_.value()) {
        if (stop.load())
            throw std::runtime_error(why_stopped);
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("apply did not reach " + at_.str() + " within " +
                                     std::to_string(timeout.count() / 1000) +
                                     " s (paused, failed or far behind?); apply was released");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

void CommonPoint::release()
{
    if (!owner_.owns_lock())
        return;
    hold_.at.store(0, std::memory_order_release);
    owner_.unlock();
}

} // namespace pgshift::verify
