// SchemaFollower: indexes and constraints made on the source later reach the target.
#include "pgshift/daemon/schema_follower.hpp"

#include "pgshift/apply/later_objects.hpp"
#include "pgshift/daemon/state.hpp"
#include "pgshift/verify/common_point.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <thread>

namespace pgshift::daemon {

namespace {

constexpr auto k_look_interval = std::chrono::milliseconds(10000);
/// A table under an ACCESS EXCLUSIVE lock holds up the catalog reads: retried at the next look.
constexpr auto k_read_lock_timeout = std::chrono::milliseconds(5000);
/// How long apply may take to reach a common point (it is held there only for the change).
constexpr auto k_common_point_timeout = std::chrono::milliseconds(10000);

/// How the log and the status name what the follower does with an object.
struct Verbs {
    const char* doing; ///< "building it"
    const char* done;  ///< "built"
    const char* will;  ///< what the status says pgshift does
};

Verbs verbs_of(const apply::LaterObject& o)
{
    switch (o.change) {
    case apply::Change::drop: return {"dropping it", "dropped", "pgshift drops it there (schema: copy)"};
    case apply::Change::grant: return {"granting them", "granted", "pgshift grants them (schema: copy)"};
    case apply::Change::create: return {"creating it", "created", "pgshift creates it (schema: copy)"};
    case apply::Change::secure:
        return {"making it the same", "made the same", "pgshift makes it the same (schema: copy)"};
    case apply::Change::rename: return {"renaming it", "renamed", "pgshift renames it at its next change"};
    case apply::Change::owner: return {"changing it", "changed", "pgshift changes it (schema: copy)"};
    case apply::Change::revoke: return {"revoking it", "revoked", "pgshift revokes it (schema: copy)"};
    case apply::Change::defaults: return {"changing them", "changed", "pgshift changes them (schema: copy)"};
    case apply::Change::analyze: return {"analyzing the table", "made", "pgshift analyzes the table (schema: copy)"};
    case apply::Change::detach:
        return {"detaching it", "detached",
                "pgshift detaches it there, its rows kept in it, once apply has passed the drop (schema: copy)"};
    case apply::Change::build: break;
    }
    return {"building it", "built", "pgshift builds it (schema: copy)"};
}

/// Sessions for the comparison and the builds. The databases' own settings (a statement_timeout,
/// a read-only default) are the application's: a concurrent build may take long, and waits for
/// every transaction older than it.
std::unique_ptr<pg::Connection> connect_to(const std::string& conninfo, const config::Config& cfg)
{
    const auto options = std::string(pg::k_no_timeouts) + " " + pg::k_writable;
    auto c = std::make_unique<pg::Connection>(
        pg::conninfo_with(conninfo, {{"application_name", "pgshift_" + cfg.name + "_schema"}, {"options", options}}));
    pg::no_version_timeouts(*c);
    return c;
}

} // namespace

bool change_target_for_rejected_row(const config::Config& cfg, const RuleViolation& v, DaemonState& state)
{
    // ExecFindPartition's "no partition of relation ... found for row": a check violation that
    // names the partitioned table and no constraint.
    const bool routing = v.sqlstate == "23514" && v.constraint.empty();
    // enum_in's error names neither the table nor the column: every replicated table's types.
    const bool enum_value = v.sqlstate == "22P02";
    try {
        auto source = connect_to(cfg.source.conninfo, cfg);
        auto target = connect_to(cfg.target.conninfo, cfg);
        const std::vector<std::string> table{pg::quote_ident(v.schema) + "." + pg::quote_ident(v.table)};
        std::vector<apply::LaterObject> matched;
        for (auto& o : enum_value ? apply::schema_differences(*source, *target, cfg.publication_name(), k_read_lock_timeout)
                                  : apply::schema_differences(*source, *target, table, k_read_lock_timeout)) {
            const bool not_null = o.what.rfind("NOT NULL", 0) == 0;
            if (enum_value ? o.change == apply::Change::create && o.constraint && o.by_hand.empty()
                : routing  ? o.change == apply::Change::build && o.what.rfind("partition ", 0) == 0 && o.by_hand.empty()
                           : o.dropped() && o.constraint && (v.sqlstate == "23502" ? not_null && o.name == v.column
                                                                   : !not_null && o.name == v.constraint))
                matched.push_back(std::move(o));
        }
        if (matched.empty())
            return false;
        if (cfg.schema != config::SchemaMode::copy) {
            for (const auto& o : matched) {
                auto line = o.line(false, "");
                spdlog::error("{}", line);
                state.set_last_error(state.snapshot().last_error + "; " + line);
            }
            return false;
        }
        for (const auto& o : matched) {
            if (enum_value)
                spdlog::warn("the target refused a value of an enum type that the source has: adding {} on the target "
                             "(schema: copy), then applying again",
                             o.what);
            else if (routing)
                spdlog::warn("the target has no partition of {} for a row the source has: creating {} on the target "
                             "(schema: copy), then applying again",
                             o.table, o.what);
            else
                spdlog::warn("the target rejected a row for {}, which the source no longer has: dropping it on the "
                             "target (schema: copy), then applying again",
                             o.describe());
            apply::change_target(*target, o);
        }
        return true;
    } catch (const std::exception& e) {
        spdlog::warn("could not compare the target's table that rejected a row with the source's: {}", e.what());
    }
    return false;
}

std::string SchemaFollower::change_at_common_point(const config::Config& cfg, const apply::LaterObject& o,
                                                   const std::atomic<bool>& stop)
{
    if (state_.state() != State::streaming)
        return "apply is paused";
    std::unique_lock owner(state_.hold().owner, std::try_to_lock);
    if (!owner.owns_lock())
        return "a comparison or a switch holds apply now";
    try {
        const auto app = "pgshift_" + cfg.name + "_schema";
        verify::CommonPoint point(cfg.source.conninfo, app, app + "_" + std::to_string(++points_), state_.hold(),
                                  std::move(owner));
        auto source = connect_to(cfg.source.conninfo, cfg);
        point.import(*source);
        point.end_export();
        if (source->exec(o.source_guard).get(0, 0) != "t")
            return "the source's " + o.table + " holds rows of its range at " + point.at().str() +
                   " (in a default partition, or a partition made again for that range), which the target's " +
                   o.name + " holds among the dropped ones; pgshift cannot tell them apart: compare the tables "
                   "(pgshift verify), and detach it on the target by hand: " + o.steps.front();
        source.reset();
        point.reach(stop, k_common_point_timeout, "pgshift is stopping");
        apply::change_target(*target_, o);
        spdlog::info("{}: done at {} of the source's stream, where the target's partition held exactly the rows the "
                     "source dropped; drop it on the target when they are no longer needed: DROP TABLE {}",
                     o.describe(), point.at().str(), o.steps.front().substr(o.steps.front().rfind(' ') + 1));
    } catch (const pg::PgError& e) {
        if (e.broken())
            throw;
        return e.what();
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

void SchemaFollower::run(const std::atomic<bool>& streaming_ready, const std::atomic<bool>& stop)
{
    while (!stop.load()) {
        const auto st = state_.state();
        if (streaming_ready.load() && (st == State::streaming || st == State::paused)) {
            try {
                look(state_.reverse() ? reversed_ : base_, stop);
                look_failed_.clear();
            } catch (const std::exception& e) {
                // A server that went away: the monitor and the session report that; look again
                // later. Any other failure stops the following until it is fixed: said once.
                const auto* pe = dynamic_cast<const pg::PgError*>(&e);
                if (stop.load() || (pe && pe->broken()))
                    spdlog::debug("schema follower: {}", e.what());
                else if (look_failed_ != e.what())
                    spdlog::warn("comparing the replicated tables' schemas on the two servers failed; pgshift tries "
                                 "again every {} s: {}",
                                 k_look_interval.count() / 1000, e.what());
                if (!(pe && pe->broken()))
                    look_failed_ = e.what();
                std::lock_guard lk(cancel_mutex_);
                canceller_.reset();
                source_.reset();
                target_.reset();
            }
        }
        for (int i = 0; i < 100 && !stop.load(); ++i)
            std::this_thread::sleep_for(k_look_interval / 100);
    }
}

void SchemaFollower::cancel()
{
    std::lock_guard lk(cancel_mutex_);
    if (canceller_ && building_.load())
        (void)canceller_->cancel();
}

void SchemaFollower::connect(const config::Config& cfg)
{
    if (source_ && target_ && source_->is_ok() && target_->is_ok() && connected_reverse_ == cfg.is_reverse())
        return;
    source_ = connect_to(cfg.source.conninfo, cfg);
    auto target = connect_to(cfg.target.conninfo, cfg);
    std::lock_guard lk(cancel_mutex_);
    canceller_ = target->canceller();
    target_ = std::move(target);
    connected_reverse_ = cfg.is_reverse();
}

void SchemaFollower::look(const config::Config& cfg, const std::atomic<bool>& stop)
{
    connect(cfg);
    const bool builds = cfg.schema == config::SchemaMode::copy;
    auto report = [&](const std::vector<apply::LaterObject>& missing) {
        std::vector<std::string> all, lines, blocking;
        for (const auto& o : missing) {
            std::string line = o.line(builds, o.building ? "a build of it runs on the target now" : verbs_of(o).will);
            if (auto f = failed_.find(o.describe()); f != failed_.end() && builds)
                line += "; the last attempt failed: " + f->second;
            if (o.blocks_switch(builds))
                blocking.push_back(line);
            all.push_back(line);
            // A role the target lacks is logged, not listed: the application may use other
            // roles there, and only the operator can create it.
            if (!((o.change == apply::Change::grant || o.change == apply::Change::owner ||
                   o.change == apply::Change::defaults) &&
                  o.by_hand.rfind("role ", 0) == 0))
                lines.push_back(std::move(line));
        }
        if (all != reported_) {
            for (const auto& l : all)
                if (std::find(reported_.begin(), reported_.end(), l) == reported_.end())
                    spdlog::warn("{}", l);
            if (all.empty())
                spdlog::info("the target has every index, constraint, privilege and row-level security policy of the "
                             "replicated source tables, and no rule they dropped");
            reported_ = all;
        }
        state_.set_schema_differences(std::move(lines), std::move(blocking));
    };

    auto differences = [&] {
        auto all = apply::schema_differences(*source_, *target_, cfg.publication_name(), k_read_lock_timeout);
        std::erase_if(all, [&](const apply::LaterObject& o) {
            auto it = replaced_.find(o.describe());
            return it != replaced_.end() && !o.steps.empty() && it->second == o.steps.front();
        });
        return all;
    };
    auto missing = differences();
    std::set<std::string> names;
    for (const auto& o : missing)
        names.insert(o.describe());
    std::erase_if(failed_, [&](const auto& f) { return !names.count(f.first); });
    report(missing);
    if (!builds)
        return;
    bool built = false;
    auto remaining = missing; // what the status lists while the others are made
    for (const auto& o : missing) {
        if (stop.load())
            return;
        if (o.building || !o.by_hand.empty())
            continue;
        const auto name = o.describe();
        const bool retry = failed_.count(name) > 0;
        if (!retry && o.dropped())
            spdlog::warn("{} is no longer on the source: dropping it on the target (schema: copy)", name);
        else if (!retry)
            spdlog::info("{}: {} on the target (schema: copy)", name, verbs_of(o).doing);
        const auto started = std::chrono::steady_clock::now();
        try {
            struct Building {
                std::atomic<bool>& b;
                ~Building() { b.store(false); }
            } building{building_};
            building_.store(true);
            if (stop.load())
                return;
            if (!o.source_guard.empty()) {
                if (auto why = change_at_common_point(cfg, o, stop); !why.empty()) {
                    auto& last = failed_[name];
                    if (last != why)
                        spdlog::warn("{}: {} on the target waits; pgshift tries again every {} s: {}", name,
                                     verbs_of(o).doing, k_look_interval.count() / 1000, why);
                    last = why;
                    continue;
                }
            } else {
                apply::change_target(*target_, o);
            }
            // Once: a definition the target prints otherwise, a table that has no rows to analyze.
            if (o.what.rfind("definition of ", 0) == 0 || o.change == apply::Change::analyze)
                replaced_[name] = o.steps.front();
            spdlog::info("{} {} on the target in {:.1f} s", name, verbs_of(o).done,
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
            failed_.erase(name);
            built = true;
            // Off the status at once: a switch asked for right after must not be refused for it
            // while the next comparison runs.
            std::erase_if(remaining, [&](const apply::LaterObject& r) { return r.describe() == name; });
            report(remaining);
        } catch (const pg::PgError& e) {
            if (stop.load() || e.broken())
                throw;
            auto& last = failed_[name];
            if (last != e.what())
                spdlog::warn("{}: {} on the target failed; pgshift tries again every {} s: {}", name,
                             verbs_of(o).doing, k_look_interval.count() / 1000, e.what());
            last = e.what();
        }
    }
    if (built || !failed_.empty())
        report(differences());
}

} // namespace pgshift::daemon
