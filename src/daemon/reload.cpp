// SIGHUP reload (see reload.hpp).
#include "pgshift/daemon/reload.hpp"

#include "pgshift/common/errors.hpp"
#include "pgshift/common/logging.hpp"
#include "pgshift/control/server.hpp"
#include "pgshift/daemon/state.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <chrono>

namespace pgshift::daemon {

namespace {

/// When a reloaded value takes effect, for the reloadable keys that do not take it at once.
/// Which keys a SIGHUP applies, how a value shows in the log (never a secret's) and how it is
/// copied are the configuration table's (config::keys(), shown_value(), copy_value()).
struct TakesEffect {
    std::string_view key;
    const char* when;
};
constexpr TakesEffect k_takes_effect[] = {
    // Apply workers read it while they run: the running session keeps its value (a session's
    // configuration is a copy), the next one (after `pgshift resume`, a reconnect, a restart)
    // takes the new one.
    {"apply.on_missing_row", "from the next streaming session, e.g. after `pgshift resume`; the running one keeps its value"},
    {"reconnect.min_delay_seconds", "from the next reconnect"},
    {"reconnect.max_delay_seconds", "from the next reconnect"},
    {"reconnect.factor", "from the next reconnect"},
};

const char* takes_effect(std::string_view key)
{
    for (const auto& t : k_takes_effect)
        if (t.key == key)
            return t.when;
    return nullptr;
}

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

} // namespace

void reload_configuration(const std::string& path, Live& live)
{
    spdlog::info("SIGHUP: reloading the configuration from {}", path);
    auto keep = [&](std::size_t problems) {
        spdlog::error("reload failed ({} problem(s) above); keeping the running configuration, unchanged", problems);
    };
    config::Config fresh;
    try {
        fresh = config::load_from_file(path, config::process_env());
    } catch (const config::ConfigErrors& e) {
        for (const auto& p : e.problems())
            spdlog::error("reload: {}", p);
        keep(e.problems().size());
        return;
    }
    auto plan = plan_reload(live.base, fresh);
    // Read before anything changes, so that a token file that cannot be read changes nothing.
    std::string token = live.token;
    const bool token_key = std::find(plan.keys.begin(), plan.keys.end(), "control.token_file") != plan.keys.end();
    try {
        token = config::read_token_file(token_key ? fresh.control.token_file : live.base.control.token_file);
    } catch (const ConfigError& e) {
        spdlog::error("reload: {}", e.what());
        keep(1);
        return;
    }
    if (live.notified_ready)
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
                   static_cast<unsigned long long>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                       std::chrono::steady_clock::now().time_since_epoch())
                                                       .count()));
    for (const auto& line : plan.applied)
        spdlog::info("reloaded: {}", line);
    const bool token_changed = token != live.token;
    if (token_changed && !token_key)
        spdlog::info("reloaded: the control token (control.token_file {} was read again)",
                     in_quotes(live.base.control.token_file));
    for (const auto& line : plan.kept)
        spdlog::warn("{}", line);

    const auto old_log = live.base.log;
    const auto old_reconnect = live.base.reconnect;
    // The reverse direction's configuration differs from the forward one in keys that are
    // never reloadable (reversed()), so both take the same values.
    apply_reload(plan.keys, live.base, fresh);
    apply_reload(plan.keys, live.reversed, fresh);
    if (token_changed) {
        live.token = token;
        live.server.set_token(token);
    }
    live.state.set_max_lag_seconds(live.base.cutover.max_lag_seconds);
    if (live.base.reconnect.min_delay_seconds != old_reconnect.min_delay_seconds ||
        live.base.reconnect.max_delay_seconds != old_reconnect.max_delay_seconds ||
        live.base.reconnect.factor != old_reconnect.factor)
        live.backoff = Backoff(live.base.reconnect);
    if (live.base.log.format != old_log.format)
        set_log_format(live.base.log.format == config::LogFormat::json ? LogFormatKind::json : LogFormatKind::text);
    if (live.base.log.level != old_log.level)
        set_log_level(log_level_name(live.base.log.level));

    const auto applied = plan.applied.size() + (token_changed && !token_key ? 1 : 0);
    auto summary = applied == 0 && plan.kept.empty()
                       ? std::string("configuration reloaded: no change")
                       : fmt::format("configuration reloaded: {} change(s) applied, {} need a restart", applied,
                                     plan.kept.size());
    spdlog::info("{}", summary);
    if (live.notified_ready)
        sd_notify(0, ("READY=1\nSTATUS=" + summary).c_str());
}


const char* log_level_name(config::LogLevel level)
{
    switch (level) {
    case config::LogLevel::trace: return "trace";
    case config::LogLevel::debug: return "debug";
    case config::LogLevel::info: return "info";
    case config::LogLevel::warn: return "warn";
    case config::LogLevel::error: return "err";
    }
    return "info";
}

bool reload_applies(std::string_view key)
{
    const auto keys = config::keys();
    return std::any_of(keys.begin(), keys.end(), [&](const auto& k) { return k.key == key && k.reloadable; });
}

ReloadPlan plan_reload(const config::Config& live, const config::Config& fresh)
{
    ReloadPlan plan;
    const auto changes = config::diff(live, fresh);
    const bool listen_changed = std::any_of(changes.begin(), changes.end(),
                                            [](const config::ConfigChange& c) { return c.key == "control.listen"; });
    for (const auto& change : changes) {
        const auto before = config::shown_value(change.key, live);
        const auto after = config::shown_value(change.key, fresh);
        const bool secret = !before || !after;
        // A new file may drop the token together with a move to a loopback address; the address
        // only changes at a restart, so until then the token stays.
        const bool drops_token =
            change.key == "control.token_file" && fresh.control.token_file.empty() && listen_changed;
        if (change.reloadable && !drops_token) {
            plan.keys.push_back(change.key);
            std::string line = change.key + (secret ? " changed (not logged: it may hold a secret)"
                                                    : " " + *before + " -> " + *after);
            if (const char* when = takes_effect(change.key))
                line += std::string(" (") + when + ")";
            plan.applied.push_back(std::move(line));
        } else if (drops_token) {
            plan.kept.push_back(change.key +
                                " changed to none together with control.listen: needs a restart, keeping " +
                                before.value_or("?") + " (the running control plane still listens on " +
                                in_quotes(live.control.listen) + ")");
        } else {
            plan.kept.push_back(change.key + " changed: needs a restart, keeping " +
                                (secret ? std::string("the running value (not logged: it may hold a secret)")
                                        : *before));
        }
    }
    return plan;
}

void apply_reload(const std::vector<std::string>& keys, config::Config& to, const config::Config& fresh)
{
    for (const auto& key : keys)
        if (reload_applies(key))
            (void)config::copy_value(key, to, fresh);
}

} // namespace pgshift::daemon
