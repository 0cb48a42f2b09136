// TestCluster, TempDir, free ports and child-process helpers for the integration tests.
#include "harness/cluster.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PGSHIFT_SOURCE_DIR
#error "PGSHIFT_SOURCE_DIR must be defined by the build"
#endif

namespace pgshift::test {

namespace fs = std::filesystem;

fs::path source_dir()
{
    if (const char* env = std::getenv("PGSHIFT_SOURCE_DIR"); env && *env)
        return env;
    return PGSHIFT_SOURCE_DIR;
}

fs::path pgcluster_script() { return source_dir() / "scripts" / "pgcluster.sh"; }

bool keep_temp_dirs()
{
    const char* env = std::getenv("PGSHIFT_TEST_KEEP");
    return env && *env && std::string(env) != "0";
}

CommandResult run_command(const std::vector<std::string>& argv)
{
    if (argv.empty())
        throw std::invalid_argument("run_command: empty argv");
    // Everything the child needs is prepared before fork: after fork only async-signal-safe calls.
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(fds[0]);
        close(fds[1]);
        throw std::runtime_error(std::string("fork: ") + std::strerror(err));
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGPIPE, SIG_DFL);
        execv(args[0], args.data());
        const char msg[] = "run_command: exec failed\n";
        [[maybe_unused]] auto n = write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(127);
    }
    close(fds[1]);
    CommandResult result;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0) {
            result.output.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    }
    if (WIFEXITED(status))
        result.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        result.exit_code = 128 + WTERMSIG(status);
    return result;
}

int free_port()
{
    auto r = run_command({pgcluster_script().string(), "free-port"});
    if (r.exit_code != 0)
        throw std::runtime_error("pgcluster.sh free-port failed: " + r.output);
    return std::stoi(r.output);
}

TempDir::TempDir(const std::string& prefix)
{
    std::string templ = "/tmp/" + prefix + "-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data()))
        throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    path_ = buf.data();
    // mkdtemp creates 0700; the postgres user must traverse it when we run as root.
    if (chmod(path_.c_str(), 0755) != 0)
        throw std::runtime_error(std::string("chmod ") + path_.string() + ": " + std::strerror(errno));
}

TempDir::~TempDir()
{
    if (keep_temp_dirs()) {
        std::cerr << "[harness] keeping " << path_ << '\n';
        return;
    }
    std::error_code ec;
    fs::remove_all(path_, ec);
}

Rows to_rows(const pg::Result& result)
{
    Rows rows;
    rows.reserve(static_cast<std::size_t>(result.rows()));
    for (int r = 0; r < result.rows(); ++r) {
        Row row;
        row.reserve(static_cast<std::size_t>(result.columns()));
        for (int c = 0; c < result.columns(); ++c) {
            if (result.is_null(r, c))
                row.emplace_back(std::nullopt);
            else
                row.emplace_back(result.str(r, c));
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

std::string file_tail(const fs::path& path, std::size_t lines)
{
    std::ifstream in(path);
    if (!in)
        return "(no file " + path.string() + ")\n";
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
        last.push_back(std::move(line));
        if (last.size() > lines)
            last.pop_front();
    }
    std::string out;
    for (const auto& l : last)
        out += l + '\n';
    return out;
}

TestCluster::TestCluster(std::vector<std::string> settings) : dir_("pgshift-pg")
{
    data_dir_ = dir_.path() / "data";
    // A port chosen as free can be taken before the server binds it (parallel tests): retry.
    std::string last_error;
    for (int attempt = 0; attempt < 4; ++attempt) {
        port_ = free_port();
        std::vector<std::string> argv = {pgcluster_script().string(), "start", data_dir_.string(),
                                         std::to_string(port_)};
        for (const auto& s : settings) {
            argv.emplace_back("-c");
            argv.push_back(s);
        }
        auto r = run_command(argv);
        if (r.exit_code == 0) {
            running_ = true;
            return;
        }
        last_error = r.output;
        (void)run_command({pgcluster_script().string(), "stop", data_dir_.string()});
    }
    throw std::runtime_error("could not start a test cluster: " + last_error);
}

TestCluster::~TestCluster() { stop(); }

void TestCluster::stop() noexcept
{
    conn_.reset();
    if (!running_)
        return;
    running_ = false;
    try {
        std::error_code ec;
        if (keep_temp_dirs())
            fs::copy_file(server_log(), dir_.path() / "server.log", fs::copy_options::overwrite_existing, ec);
        auto r = run_command({pgcluster_script().string(), "stop", data_dir_.string()});
        if (r.exit_code != 0)
            std::cerr << "[harness] pgcluster.sh stop " << data_dir_ << " failed: " << r.output << '\n';
    } catch (const std::exception& e) {
        std::cerr << "[harness] stopping cluster " << data_dir_ << ": " << e.what() << '\n';
    }
}

std::string TestCluster::conninfo() const
{
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=postgres user=postgres";
}

std::string TestCluster::log_tail(std::size_t lines) const { return file_tail(server_log(), lines); }

pg::Connection TestCluster::connect() const { return pg::Connection(conninfo()); }

pg::Connection& TestCluster::connection()
{
    if (!conn_ || !conn_->is_ok())
        conn_.emplace(conninfo());
    return *conn_;
}

pg::Result TestCluster::exec(const std::string& sql) { return connection().exec(sql); }

pg::Result TestCluster::exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params)
{
    return connection().exec_params(sql, params);
}

Rows TestCluster::query(const std::string& sql) { return to_rows(exec(sql)); }

std::optional<std::string> TestCluster::scalar(const std::string& sql)
{
    auto res = exec(sql);
    if (res.rows() != 1 || res.columns() != 1)
        throw std::runtime_error("expected one value from: " + sql + " (got " + std::to_string(res.rows()) +
                                 " rows, " + std::to_string(res.columns()) + " columns)");
    if (res.is_null(0, 0))
        return std::nullopt;
    return res.str(0, 0);
}

std::string TestCluster::value(const std::string& sql)
{
    auto v = scalar(sql);
    if (!v)
        throw std::runtime_error("unexpected NULL from: " + sql);
    return *v;
}

} // namespace pgshift::test
