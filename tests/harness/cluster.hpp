// Throwaway PostgreSQL clusters for integration tests: temp dirs, free ports, TestCluster (RAII).
//
// A TestCluster is started by scripts/pgcluster.sh into a fresh directory under /tmp
// and always stopped (and its directory removed) by the destructor, also when a test
// fails with an exception. Set PGSHIFT_TEST_KEEP=1 to keep the temp dirs (the server
// log is copied next to the data directory before it is removed).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::test {

/// The repository root (for scripts/).
[[nodiscard]] std::filesystem::path source_dir();
/// scripts/pgcluster.sh in the repository.
[[nodiscard]] std::filesystem::path pgcluster_script();

/// Outcome of a child process run to completion.
struct CommandResult {
    int exit_code = -1; ///< 128 + signal when killed by a signal
    std::string output; ///< stdout and stderr, interleaved
};

/// Runs argv[0] with arguments (no shell), capturing stdout+stderr. Safe to call from any thread.
[[nodiscard]] CommandResult run_command(const std::vector<std::string>& argv);

/// The last `lines` lines of a text file (a note when it does not exist).
[[nodiscard]] std::string file_tail(const std::filesystem::path& path, std::size_t lines);

/// A TCP port free on 127.0.0.1 (asks pgcluster.sh free-port).
[[nodiscard]] int free_port();

/// A directory under /tmp, world-traversable (mode 0755) so that the `postgres`
/// user can reach clusters created inside it when tests run as root. Removed
/// recursively by the destructor unless PGSHIFT_TEST_KEEP is set.
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "pgshift-it");
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir();

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

/// Whether PGSHIFT_TEST_KEEP asks to keep temp dirs for post-mortem.
[[nodiscard]] bool keep_temp_dirs();

/// One row of a query result; nullopt is SQL NULL.
using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

/// Converts a whole result to rows of text values.
[[nodiscard]] Rows to_rows(const pg::Result& result);

/// A running throwaway cluster. Not thread-safe: the built-in connection belongs to the
/// thread that uses exec/query; other threads open their own with connect().
class TestCluster {
public:
    /// Starts a cluster; `settings` are extra "name=value" server settings.
    explicit TestCluster(std::vector<std::string> settings = {});
    TestCluster(const TestCluster&) = delete;
    TestCluster& operator=(const TestCluster&) = delete;
    ~TestCluster();

    [[nodiscard]] int port() const { return port_; }
    /// "host=127.0.0.1 port=N dbname=postgres user=postgres"
    [[nodiscard]] std::string conninfo() const;
    [[nodiscard]] const std::filesystem::path& data_dir() const { return data_dir_; }
    [[nodiscard]] std::filesystem::path server_log() const { return data_dir_ / "server.log"; }
    /// The last `lines` lines of the server log.
    [[nodiscard]] std::string log_tail(std::size_t lines = 60) const;

    /// A new connection to the cluster (caller owns it).
    [[nodiscard]] pg::Connection connect() const;

    /// Runs SQL (several statements allowed) on the cluster's own connection.
    pg::Result exec(const std::string& sql);
    /// Runs one parameterised statement on the cluster's own connection.
    pg::Result exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params);
    /// Runs SQL and returns its last result's rows as text.
    [[nodiscard]] Rows query(const std::string& sql);
    /// The single value of a one-row, one-column query (nullopt for NULL); throws otherwise.
    [[nodiscard]] std::optional<std::string> scalar(const std::string& sql);
    /// Like scalar() but throws on NULL.
    [[nodiscard]] std::string value(const std::string& sql);

    /// The built-in connection (reconnects if it broke).
    pg::Connection& connection();

    /// Stops the server and removes its directory (idempotent; the destructor calls it).
    void stop() noexcept;

private:
    TempDir dir_;
    std::filesystem::path data_dir_;
    int port_ = 0;
    bool running_ = false;
    std::optional<pg::Connection> conn_;
};

} // namespace pgshift::test
