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

/// How each key of the configuration shows in a reload's log lines, and how the daemon takes on
/// a new value at runtime (null: only a restart can). One row per key of config::keys(); a
/// unit test holds the two lists together.
struct KeyView {
    std::string_view key;
    std::string (*show)(const config::Config&); ///< null: never logged (a secret may be in it)
    void (*reload)(config::Config& to, const config::Config& from);
    const char* when = nullptr; ///< when a reloaded value takes effect, if not at once
};

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }
std::string yes_no(bool b) { return b ? "true" : "false"; }
std::string number(double v) { return fmt::format("{}", v); }
std::string globs(const std::vector<std::string>& v)
{
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i)
        out += (i ? ", " : "") + in_quotes(v[i]);
    return out + "]";
}
/// The name of an enum value among a choice key's names (config::keys() order = enum order).
template <typename E> std::string choice_name(std::string_view key, E value)
{
    for (const auto& k : config::keys())
        if (k.key == key && static_cast<std::size_t>(value) < k.choices.size())
            return std::string(k.choices[static_cast<std::size_t>(value)]);
    return std::to_string(static_cast<int>(value));
}

#define PGSHIFT_SHOW(expr) [](const config::Config& c) -> std::string { return expr; }
#define PGSHIFT_COPY(member) [](config::Config& to, const config::Config& from) { to.member = from.member; }

const KeyView k_key_views[] = {
    {"name", PGSHIFT_SHOW(in_quotes(c.name)), nullptr},
    {"source.conninfo", nullptr, nullptr},
    {"target.conninfo", nullptr, nullptr},
    {"tables.include", PGSHIFT_SHOW(globs(c.tables.include)), nullptr},
    {"tables.exclude", PGSHIFT_SHOW(globs(c.tables.exclude)), nullptr},
    {"initial_copy.enabled", PGSHIFT_SHOW(yes_no(c.initial_copy.enabled)), nullptr},
    {"initial_copy.workers", PGSHIFT_SHOW(std::to_string(c.initial_copy.workers)), nullptr},
    {"initial_copy.split_tables", PGSHIFT_SHOW(choice_name("initial_copy.split_tables", c.initial_copy.split_tables)),
     nullptr},
    {"schema", PGSHIFT_SHOW(choice_name("schema", c.schema)), nullptr},
    {"apply.workers", PGSHIFT_SHOW(std::to_string(c.apply.workers)), nullptr},
    // Apply workers read it while they run: the running session keeps its value (a session's
    // configuration is a copy), the next one (after `pgshift resume`, a reconnect, a restart)
    // takes the new one.
    {"apply.on_missing_row", PGSHIFT_SHOW(choice_name("apply.on_missing_row", c.apply.on_missing_row)),
     PGSHIFT_COPY(apply.on_missing_row),
     "from the next streaming session, e.g. after `pgshift resume`; the running one keeps its value"},
    {"apply.max_queue_bytes", PGSHIFT_SHOW(std::to_string(c.apply.max_queue_bytes)), nullptr},
    {"apply.spill_dir", PGSHIFT_SHOW(in_quotes(c.apply.spill_dir)), nullptr},
    {"control.listen", PGSHIFT_SHOW(in_quotes(c.control.listen)), nullptr},
    {"control.token_file", PGSHIFT_SHOW(in_quotes(c.control.token_file)), PGSHIFT_COPY(control.token_file)},
    {"reconnect.min_delay_seconds", PGSHIFT_SHOW(number(c.reconnect.min_delay_seconds)),
     PGSHIFT_COPY(reconnect.min_delay_seconds), "from the next reconnect"},
    {"reconnect.max_delay_seconds", PGSHIFT_SHOW(number(c.reconnect.max_delay_seconds)),
     PGSHIFT_COPY(reconnect.max_delay_seconds), "from the next reconnect"},
    {"reconnect.factor", PGSHIFT_SHOW(number(c.reconnect.factor)), PGSHIFT_COPY(reconnect.factor),
     "from the next reconnect"},
    {"cutover.fence", PGSHIFT_SHOW(choice_name("cutover.fence", c.cutover.fence)), PGSHIFT_COPY(cutover.fence)},
    // Commands may carry credentials: never logged.
    {"cutover.fence_command", nullptr, PGSHIFT_COPY(cutover.fence_command)},
    {"cutover.unfence_command", nullptr, PGSHIFT_COPY(cutover.unfence_command)},
    {"cutover.switch_command", nullptr, PGSHIFT_COPY(cutover.switch_command)},
    {"cutover.max_lag_seconds", PGSHIFT_SHOW(number(c.cutover.max_lag_seconds)),
     PGSHIFT_COPY(cutover.max_lag_seconds)},
    {"cutover.timeout_seconds", PGSHIFT_SHOW(number(c.cutover.timeout_seconds)),
     PGSHIFT_COPY(cutover.timeout_seconds)},
    {"cutover.sync_sequences", PGSHIFT_SHOW(yes_no(c.cutover.sync_sequences)), PGSHIFT_COPY(cutover.sync_sequences)},
    {"cutover.verify", PGSHIFT_SHOW(choice_name("cutover.verify", c.cutover.verify)), PGSHIFT_COPY(cutover.verify)},
    {"log.level", PGSHIFT_SHOW(choice_name("log.level", c.log.level)), PGSHIFT_COPY(log.level)},
    {"log.format", PGSHIFT_SHOW(choice_name("log.format", c.log.format)), PGSHIFT_COPY(log.format)},
};

#undef PGSHIFT_SHOW
#undef PGSHIFT_COPY

const KeyView* key_view(std::string_view key)
{
    for (const auto& k : k_key_views)
        if (k.key == key)
            return &k;
    return nullptr;
}

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
    const auto* k = key_view(key);
    return k && k->reload;
}

ReloadPlan plan_reload(const config::Config& live, const config::Config& fresh)
{
    ReloadPlan plan;
    const auto changes = config::diff(live, fresh);
    const bool listen_changed = std::any_of(changes.begin(), changes.end(),
                                            [](const config::ConfigChange& c) { return c.key == "control.listen"; });
    for (const auto& change : changes) {
        const auto* k = key_view(change.key);
        const bool secret = !k || !k->show;
        // A new file may drop the token together with a move to a loopback address; the address
        // only changes at a restart, so until then the token stays.
        const bool drops_token =
            change.key == "control.token_file" && fresh.control.token_file.empty() && listen_changed;
        if (change.reloadable && k && k->reload && !drops_token) {
            plan.keys.push_back(change.key);
            std::string line = change.key + (secret ? " changed (not logged: it may hold a secret)"
                                                    : " " + k->show(live) + " -> " + k->show(fresh));
            if (k->when)
                line += std::string(" (") + k->when + ")";
            plan.applied.push_back(std::move(line));
        } else if (drops_token) {
            plan.kept.push_back(change.key +
                                " changed to none together with control.listen: needs a restart, keeping " +
                                k->show(live) + " (the running control plane still listens on " +
                                in_quotes(live.control.listen) + ")");
        } else {
            plan.kept.push_back(change.key + " changed: needs a restart, keeping " +
                                (secret ? std::string("the running value (not logged: it may hold a secret)")
                                        : k->show(live)));
        }
    }
    return plan;
}

void apply_reload(const std::vector<std::string>& keys, config::Config& to, const config::Config& fresh)
{
    for (const auto& key : keys)
        if (const auto* k = key_view(key); k && k->reload)
            k->reload(to, fresh);
}

} // namespace pgshift::daemon
