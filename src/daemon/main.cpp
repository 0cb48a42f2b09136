// pgshift's command line: subcommands of SPEC section 1.
#include "pgshift/check/check.hpp"
#include "pgshift/common/logging.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/daemon/client.hpp"
#include "pgshift/daemon/reload.hpp"
#include "pgshift/daemon/run.hpp"

#include <CLI/CLI.hpp>
#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <iostream>

using namespace pgshift;

namespace {

int cmd_run(const std::string& path)
{
    config::Config cfg;
    try {
        cfg = config::load_from_file(path, config::process_env());
    } catch (const config::ConfigErrors& e) {
        for (const auto& p : e.problems())
            std::cerr << p << "\n";
        return daemon::k_exit_config;
    }
    setup_logging(daemon::log_level_name(cfg.log.level),
                  cfg.log.format == config::LogFormat::json ? LogFormatKind::json : LogFormatKind::text);
    return daemon::run(cfg, path);
}

/// `pgshift check`: every problem at once; exit 0 only when `run` would succeed.
int cmd_check(const std::string& path, bool json)
{
    config::Config cfg;
    try {
        cfg = config::load_from_file(path, config::process_env());
    } catch (const config::ConfigErrors& e) {
        check::Report report;
        for (const auto& p : e.problems()) {
            std::cerr << p << "\n";
            report.problems.push_back({check::Severity::error, check::Side::config, "config", p});
        }
        if (json)
            std::cout << check::to_json(report);
        return daemon::k_exit_config;
    }
    auto report = check::run_checks(cfg, config::process_env());
    std::cout << (json ? check::to_json(report) : check::to_text(report));
    return report.ok() ? daemon::k_exit_ok : daemon::k_exit_failure;
}

int cmd_version()
{
    std::cout << "pgshift " << PGSHIFT_VERSION << " (revision " << PGSHIFT_REVISION << ", libpq "
              << PQlibVersion() / 10000 << "." << PQlibVersion() % 10000 << ", built " << __DATE__ << ")\n";
    return daemon::k_exit_ok;
}

} // namespace

int main(int argc, char** argv)
{
    CLI::App app{"pgshift: move a live PostgreSQL database to a new server with near-zero downtime"};
    app.require_subcommand(1);
    std::string config_path;
    auto* run = app.add_subcommand("run", "run the daemon in the foreground (what systemd starts)");
    run->add_option("--config,-c", config_path, "configuration file (YAML)")->required();
    bool check_json = false;
    auto* check_cmd = app.add_subcommand("check", "preflight: check the configuration and both servers");
    check_cmd->add_option("--config,-c", config_path, "configuration file (YAML)")->required();
    check_cmd->add_flag("--json", check_json, "print one JSON document");
    auto* version = app.add_subcommand("version", "print version and build information");

    // Client commands: find the daemon through --config or --url.
    daemon::ClientOptions client;
    std::vector<std::pair<CLI::App*, std::string>> clients;
    auto add_client = [&](const char* name, const char* help) {
        auto* sub = app.add_subcommand(name, help);
        auto* cfg_opt = sub->add_option("--config,-c", client.config_path, "the daemon's configuration file");
        auto* url_opt = sub->add_option("--url", client.url, "the daemon's control URL, e.g. http://127.0.0.1:8187");
        sub->add_option("--token-file", client.token_file, "file holding the bearer token (with --url)");
        cfg_opt->excludes(url_opt);
        clients.emplace_back(sub, name);
        return sub;
    };
    add_client("status", "show the running daemon's status")->add_flag("--json", client.json, "print JSON");
    add_client("lag", "print the current lag (bytes and seconds)");
    add_client("pause", "pause applying changes");
    add_client("resume", "resume applying changes");
    add_client("cutover", "start a cutover")->add_flag("--wait", client.wait, "follow it to the end");
    add_client("rollback", "start a rollback (after a cutover)")->add_flag("--wait", client.wait, "follow it to the end");
    add_client("verify", "compare source and target table by table")->add_flag("--wait", client.wait, "follow it");
    add_client("finish", "end the migration: drop pgshift's slots, publications and origins on both servers");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return daemon::k_exit_usage;
    }
    try {
        if (run->parsed())
            return cmd_run(config_path);
        if (check_cmd->parsed())
            return cmd_check(config_path, check_json);
        if (version->parsed())
            return cmd_version();
        for (auto& [sub, name] : clients)
            if (sub->parsed())
                return daemon::run_client(name, client);
    } catch (const std::exception& e) {
        std::cerr << "pgshift: " << e.what() << "\n";
        return daemon::k_exit_failure;
    }
    return daemon::k_exit_usage;
}
