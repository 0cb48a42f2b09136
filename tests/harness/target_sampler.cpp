// TargetSampler: the thread, retries, apply-session counting and violation log of the samplers.
#include "harness/target_sampler.hpp"

#include <algorithm>
#include <optional>

namespace pgshift::test {

TargetSampler::TargetSampler(std::string conninfo, const std::string& daemon_name, std::chrono::milliseconds period)
    : conninfo_(std::move(conninfo)), apply_name_regex_("^pgshift_" + daemon_name + "_w[0-9]+$"), period_(period)
{
}

TargetSampler::~TargetSampler() { stop(); }

void TargetSampler::start() { thread_ = std::thread([this] { run(); }); }

void TargetSampler::stop()
{
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

std::string TargetSampler::violations() const
{
    std::lock_guard lock(mutex_);
    return violations_;
}

void TargetSampler::violation(const std::string& what)
{
    std::lock_guard lock(mutex_);
    if (violations_.size() < 4000)
        violations_ += what + "\n";
}

void TargetSampler::run()
{
    std::optional<pgshift::pg::Connection> conn;
    while (!stop_) {
        try {
            if (!conn || !conn->is_ok())
                conn.emplace(conninfo_);
            auto sessions = conn->exec_params(
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name ~ $1",
                {apply_name_regex_});
            max_apply_sessions_ = std::max(max_apply_sessions_.load(), std::stoi(sessions.str(0, 0)));
            sample(*conn);
            ++samples_;
        } catch (const pgshift::pg::PgError&) {
            conn.reset(); // the target may be restarting: retry
        } catch (const std::exception& e) {
            violation(std::string("sample failed: ") + e.what());
            conn.reset();
        }
        std::this_thread::sleep_for(period_);
    }
}

} // namespace pgshift::test
