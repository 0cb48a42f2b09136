// The real pgshift binary as a child process: config file, start, SIGKILL, SIGTERM, log tail.
//
// Design notes:
// - start() forks and execs `pgshift run --config FILE`, stdout and stderr appended to
//   one log file in the test's work dir. The child gets PR_SET_PDEATHSIG=SIGKILL so a
//   test binary killed by a ctest timeout leaves no daemon behind; since that signal
//   fires when the *forking thread* exits, call start() from the test's main thread.
// - Every live DaemonProcess is registered so that a failed assertion can print the
//   log tails (print_live_daemon_logs()); the destructor also prints the tail when it
//   runs during exception unwinding (REQUIRE failure, unexpected exception).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>

namespace pgshift::test {

/// Path of the pgshift binary: $PGSHIFT_BINARY if set, else the build's PGSHIFT_BINARY.
[[nodiscard]] std::filesystem::path pgshift_binary();

/// What goes into the daemon's YAML configuration.
struct DaemonOptions {
    std::string name = "it";
    std::string source_conninfo;
    std::string target_conninfo;
    bool initial_copy = false;
    int copy_workers = 0;  ///< initial_copy.workers; 0: the default
    std::string split_tables; ///< initial_copy.split_tables; empty: the default (auto)
    std::string schema;    ///< schema: copy | verify; empty: the default
    int workers = 1;
    std::uint64_t max_queue_bytes = 0; ///< 0: the default
    std::string spill_dir;             ///< apply.spill_dir; empty: the default
    std::string log_level = "debug";
    int control_port = 0;     ///< 0: pick a free port
    std::string extra_yaml;   ///< appended verbatim (top-level keys)
};

/// The YAML text for `options` (control_port must be set).
[[nodiscard]] std::string daemon_config_yaml(const DaemonOptions& options);

/// A double-quoted YAML scalar.
[[nodiscard]] std::string yaml_quote(const std::string& s);

class DaemonProcess {
public:
    /// Writes `work_dir`/pgshift.yaml; does not start the daemon.
    DaemonProcess(std::filesystem::path work_dir, DaemonOptions options);
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;
    /// SIGKILLs and reaps a still-running daemon.
    ~DaemonProcess();

    /// Starts the daemon (throws if it is already running).
    void start();
    /// Sends `sig`; for SIGKILL also waits for and reaps the process.
    void kill(int sig);
    /// SIGTERM, then waits up to `timeout`. Returns the exit code (128 + signal when killed by
    /// a signal), or nullopt on timeout, in which case the daemon is SIGKILLed and reaped.
    [[nodiscard]] std::optional<int> terminate(std::chrono::milliseconds timeout = std::chrono::seconds(30));
    /// Waits up to `timeout` for the daemon to exit on its own; its exit code or nullopt.
    [[nodiscard]] std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    /// True while the process has not exited (reaps it when it has).
    [[nodiscard]] bool running();
    /// Exit code of the last run once it ended (128 + signal when signalled).
    [[nodiscard]] std::optional<int> exit_code() const { return exit_code_; }

    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] const DaemonOptions& options() const { return options_; }
    [[nodiscard]] const std::filesystem::path& config_path() const { return config_path_; }
    [[nodiscard]] const std::filesystem::path& log_path() const { return log_path_; }
    /// "pgshift_<name>": publication and slot on the source.
    [[nodiscard]] std::string slot_name() const { return "pgshift_" + options_.name; }
    /// http://127.0.0.1:<control port>
    [[nodiscard]] std::string control_url() const;
    /// The value of one series of the running daemon's /metrics (read with curl), e.g.
    /// "pgshift_apply_statements_total"; nullopt when it cannot be read.
    [[nodiscard]] std::optional<double> metric(const std::string& series) const;
    /// The last `lines` lines of the daemon's log file.
    [[nodiscard]] std::string log_tail(std::size_t lines = 60) const;
    /// How many times start() ran.
    [[nodiscard]] int starts() const { return starts_; }

private:
    void reap_blocking();

    std::filesystem::path work_dir_;
    DaemonOptions options_;
    std::filesystem::path config_path_;
    std::filesystem::path log_path_;
    pid_t pid_ = -1;
    std::optional<int> exit_code_;
    int starts_ = 0;
    int uncaught_at_construction_ = 0;
    bool tail_printed_ = false;

    friend void print_live_daemon_logs(const char* why);
};

/// Prints the log tail of every live DaemonProcess to stderr (once per daemon and run).
void print_live_daemon_logs(const char* why);

} // namespace pgshift::test
