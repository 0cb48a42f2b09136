// A background thread that reads the target while apply runs and collects what it must never see.
//
// Derived classes implement sample() (one consistent read, reporting through violation()); they
// call start() at the end of their constructor and stop() first thing in their destructor, so
// that the thread never runs sample() on a half-built or half-destroyed object. Connection
// trouble (PgError) is retried, as the target may be restarting; any other exception is a
// violation; each round also counts the distinct apply
// sessions (application_name pgshift_<name>_w<k>) connected at one time, so a test can assert
// that N workers really ran.
#pragma once

#include "pgshift/pg/connection.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace pgshift::test {

class TargetSampler {
public:
    TargetSampler(std::string conninfo, const std::string& daemon_name, std::chrono::milliseconds period);
    TargetSampler(const TargetSampler&) = delete;
    TargetSampler& operator=(const TargetSampler&) = delete;
    virtual ~TargetSampler();

    /// Stops and joins the thread (idempotent).
    void stop();
    [[nodiscard]] int samples() const { return samples_; }
    /// The most distinct apply sessions (pgshift_<name>_w<k>) connected at one time.
    [[nodiscard]] int max_apply_sessions() const { return max_apply_sessions_; }
    /// Every violation reported, one per line (capped at about 4,000 characters).
    [[nodiscard]] std::string violations() const;

protected:
    /// Starts the thread; call at the end of the derived constructor.
    void start();
    /// One sample on `conn`; throws on connection trouble (the round is retried).
    virtual void sample(pgshift::pg::Connection& conn) = 0;
    void violation(const std::string& what);

private:
    void run();

    std::string conninfo_;
    std::string apply_name_regex_;
    std::chrono::milliseconds period_;
    std::atomic<bool> stop_{false};
    std::atomic<int> samples_{0}, max_apply_sessions_{0};
    mutable std::mutex mutex_;
    std::string violations_; // guarded by mutex_
    std::thread thread_;
};

} // namespace pgshift::test
