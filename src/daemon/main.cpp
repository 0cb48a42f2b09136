// pgshift's command line: subcommands of SPEC section 1.
#include "pgshift/common/logging.hpp"
#include "pgshift/config/config.hpp"
#include "pgshift/daemon/run.hpp"

#include <CLI/CLI.hpp>
#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <iostream>

using namespace pgshift;

namespace {

const char* level_name(config::LogLevel l)
{
    switch (l) {
    case config::LogLevel::trace: return "trace";
    case config::LogLevel::debug: return "debug";
    case config::LogLevel::info: return "info";
    case config::LogLevel::warn: return "warn";
    case config::LogLevel::error: return "err";
    }
    return "info";
}

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
    setup_logging(level_name(cfg.log.level),
                  cfg.log.format == config::LogFormat::json ? LogFormatKind::json : LogFormatKind::text);
    return daemon::run(cfg);
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
    auto* version = app.add_subcommand("version", "print version and build information");
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
        if (version->parsed())
            return cmd_version();
    } catch (const std::exception& e) {
        std::cerr << "pgshift: " << e.what() << "\n";
        return daemon::k_exit_failure;
    }
    return daemon::k_exit_usage;
}
