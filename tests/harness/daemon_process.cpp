// DaemonProcess: fork/exec of the pgshift binary, signals, reaping, config and log files.
#include "harness/daemon_process.hpp"

#include "harness/cluster.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#ifndef PGSHIFT_BINARY
#error "PGSHIFT_BINARY must be defined by the build"
#endif

namespace pgshift::test {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::mutex g_registry_mutex;
std::set<DaemonProcess*> g_registry; // guarded by g_registry_mutex

int status_to_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

void append_line(const fs::path& path, const std::string& line)
{
    std::ofstream out(path, std::ios::app);
    out << line << '\n';
}

} // namespace

fs::path pgshift_binary()
{
    if (const char* env = std::getenv("PGSHIFT_BINARY"); env && *env)
        return env;
    return PGSHIFT_BINARY;
}

std::string yaml_quote(const std::string& s)
{
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + '"';
}

std::string daemon_config_yaml(const DaemonOptions& o)
{
    std::string y;
    y += "name: " + o.name + "\n";
    y += "source:\n  conninfo: " + yaml_quote(o.source_conninfo) + "\n";
    y += "target:\n  conninfo: " + yaml_quote(o.target_conninfo) + "\n";
    y += std::string("initial_copy:\n  enabled: ") + (o.initial_copy ? "true" : "false") + "\n";
    if (o.copy_workers)
        y += "  workers: " + std::to_string(o.copy_workers) + "\n";
    if (!o.split_tables.empty())
        y += "  split_tables: " + o.split_tables + "\n";
    if (!o.schema.empty())
        y += "schema: " + o.schema + "\n";
    y += "apply:\n  workers: " + std::to_string(o.workers) + "\n";
    if (o.max_queue_bytes)
        y += "  max_queue_bytes: " + std::to_string(o.max_queue_bytes) + "\n";
    if (!o.spill_dir.empty())
        y += "  spill_dir: " + yaml_quote(o.spill_dir) + "\n";
    y += "log:\n  level: " + o.log_level + "\n";
    y += "control:\n  listen: \"127.0.0.1:" + std::to_string(o.control_port) + "\"\n";
    if (!o.extra_yaml.empty()) {
        y += o.extra_yaml;
        if (y.back() != '\n')
            y += '\n';
    }
    return y;
}

DaemonProcess::DaemonProcess(fs::path work_dir, DaemonOptions options)
    : work_dir_(std::move(work_dir)), options_(std::move(options)),
      config_path_(work_dir_ / "pgshift.yaml"), log_path_(work_dir_ / "pgshift.log"),
      uncaught_at_construction_(std::uncaught_exceptions())
{
    if (options_.control_port == 0)
        options_.control_port = free_port();
    std::ofstream out(config_path_, std::ios::trunc);
    out << daemon_config_yaml(options_);
    if (!out)
        throw std::runtime_error("cannot write " + config_path_.string());
    std::lock_guard lock(g_registry_mutex);
    g_registry.insert(this);
}

DaemonProcess::~DaemonProcess()
{
    {
        std::lock_guard lock(g_registry_mutex);
        g_registry.erase(this);
    }
    // Unwinding because a REQUIRE failed or something threw: show what the daemon said.
    if (std::uncaught_exceptions() > uncaught_at_construction_ && !tail_printed_ && starts_ > 0) {
        std::cerr << "[harness] pgshift log tail (" << log_path_.string() << "):\n" << log_tail(60) << std::flush;
    }
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        reap_blocking();
    }
}

void DaemonProcess::start()
{
    if (pid_ > 0 && running())
        throw std::logic_error("pgshift is already running (pid " + std::to_string(pid_) + ")");
    const fs::path binary = pgshift_binary();
    if (access(binary.c_str(), X_OK) != 0)
        throw std::runtime_error("pgshift binary not found or not executable: " + binary.string());

    ++starts_;
    tail_printed_ = false;
    exit_code_.reset();
    append_line(log_path_, "=== harness: starting pgshift (start #" + std::to_string(starts_) + ") ===");

    // Prepared before fork: the child only makes async-signal-safe calls.
    std::vector<std::string> argv_s = {binary.string(), "run", "--config", config_path_.string()};
    std::vector<char*> argv;
    for (auto& a : argv_s)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    int log_fd = open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0)
        throw std::runtime_error("cannot open " + log_path_.string() + ": " + std::strerror(errno));
    const pid_t parent = getpid();

    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(log_fd);
        throw std::runtime_error(std::string("fork: ") + std::strerror(err));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGPIPE, SIG_DFL);
        [[maybe_unused]] int cd = chdir(work_dir_.c_str());
        execv(argv[0], argv.data());
        const char msg[] = "harness: exec of pgshift failed\n";
        [[maybe_unused]] auto n = write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(127);
    }
    close(log_fd);
    pid_ = pid;
}

void DaemonProcess::reap_blocking()
{
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0) {
        if (errno != EINTR) {
            pid_ = -1;
            return;
        }
    }
    exit_code_ = status_to_code(status);
    pid_ = -1;
}

bool DaemonProcess::running()
{
    if (pid_ <= 0)
        return false;
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == 0)
        return true;
    if (r == pid_)
        exit_code_ = status_to_code(status);
    pid_ = -1;
    return false;
}

void DaemonProcess::kill(int sig)
{
    if (pid_ <= 0)
        return;
    if (::kill(pid_, sig) != 0 && errno == ESRCH) {
        (void)running();
        return;
    }
    if (sig == SIGKILL) {
        reap_blocking();
        append_line(log_path_, "=== harness: pgshift killed with SIGKILL ===");
    }
}

std::optional<int> DaemonProcess::wait_exit(std::chrono::milliseconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    while (running()) {
        if (Clock::now() >= deadline)
            return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return exit_code_;
}

std::optional<int> DaemonProcess::terminate(std::chrono::milliseconds timeout)
{
    if (pid_ <= 0)
        return exit_code_;
    ::kill(pid_, SIGTERM);
    auto code = wait_exit(timeout);
    if (!code) {
        std::cerr << "[harness] pgshift did not exit within " << timeout.count() << " ms of SIGTERM; killing it\n";
        kill(SIGKILL);
        return std::nullopt;
    }
    append_line(log_path_, "=== harness: pgshift exited with code " + std::to_string(*code) + " after SIGTERM ===");
    return code;
}

std::string DaemonProcess::control_url() const
{
    return "http://127.0.0.1:" + std::to_string(options_.control_port);
}

std::optional<double> DaemonProcess::metric(const std::string& series) const
{
    std::string cmd = "curl -sf --max-time 5 " + control_url() + "/metrics";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p)
        return std::nullopt;
    std::string text;
    char buf[4096];
    while (auto n = fread(buf, 1, sizeof buf, p))
        text.append(buf, n);
    if (pclose(p) != 0)
        return std::nullopt;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        if (end == std::string::npos)
            end = text.size();
        std::string_view line(text.data() + pos, end - pos);
        if (line.size() > series.size() && line.substr(0, series.size()) == series && line[series.size()] == ' ')
            return std::strtod(std::string(line.substr(series.size() + 1)).c_str(), nullptr);
        pos = end + 1;
    }
    return std::nullopt;
}

std::string DaemonProcess::log_tail(std::size_t lines) const { return file_tail(log_path_, lines); }

void print_live_daemon_logs(const char* why)
{
    std::lock_guard lock(g_registry_mutex);
    for (DaemonProcess* d : g_registry) {
        if (d->tail_printed_ || d->starts_ == 0)
            continue;
        d->tail_printed_ = true;
        std::cerr << "[harness] " << why << "; pgshift log tail (" << d->log_path_.string() << "):\n"
                  << d->log_tail(60) << std::flush;
    }
}

} // namespace pgshift::test
