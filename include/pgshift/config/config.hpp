// The daemon's configuration (SPEC section 2): typed values, defaults, strict YAML loading.
//
// Design notes
// - Loading collects every problem before failing: unknown keys, duplicate keys, wrong types,
//   values out of range, missing required keys, unset ${VAR}s. Each message names the key path
//   and its 1-based line:column, e.g. "pgshift.yaml:4:3: apply.workers: expected an integer".
//   The first 100 are reported, then one line "... and N more problems"; a document over 1 MiB
//   is refused before parsing.
// - ${VAR} and ${VAR:-default} are expanded inside scalar values only, after parsing, so YAML
//   syntax can never be injected through the environment. "$$" is a literal '$'.
// - Secrets (conninfo passwords, the token) are never part of an error message.
#pragma once

#include "pgshift/common/errors.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::config {

enum class SchemaMode { copy, verify };
enum class MissingRowPolicy { error, skip };
enum class FenceMode { read_only, command, none };
enum class VerifyMode { none, counts, checksums };
enum class LogFormat { text, json };
enum class LogLevel { trace, debug, info, warn, error };

struct Endpoint {
    std::string conninfo; ///< libpq key=value or URI, validated with PQconninfoParse
};

struct Tables {
    std::vector<std::string> include; ///< schema.table globs; empty = every non-system table
    std::vector<std::string> exclude;
};

struct InitialCopy {
    bool enabled = true;
    int workers = 4;
};

struct Apply {
    int workers = 4;
    MissingRowPolicy on_missing_row = MissingRowPolicy::error;
    std::uint64_t max_queue_bytes = 268435456;
    /// Where transactions larger than a quarter of max_queue_bytes are written while they are
    /// received. Empty (the default) lets the daemon choose: the first directory of
    /// $STATE_DIRECTORY, else $TMPDIR, else /var/tmp. When set, the loader only checks that it
    /// is an absolute path; the daemon checks that it exists and is writable at start.
    std::string spill_dir;
};

struct Control {
    std::string listen = "127.0.0.1:8187";
    std::string token_file;
};

struct Cutover {
    FenceMode fence = FenceMode::read_only;
    std::string fence_command;
    std::string unfence_command;
    std::string switch_command; ///< run once the new primary is ready (repoint DNS, a pooler...)
    double max_lag_seconds = 10;
    double timeout_seconds = 60;
    bool sync_sequences = true;
    VerifyMode verify = VerifyMode::counts;
};

/// Backoff between reconnect attempts (source or target lost): min, then multiplied by
/// factor after each failed session, up to max; reset after a session that ran a minute.
struct Reconnect {
    double min_delay_seconds = 0.5;
    double max_delay_seconds = 30;
    double factor = 2;
};

struct Log {
    LogLevel level = LogLevel::info;
    LogFormat format = LogFormat::text;
};

struct Config {
    std::string name;
    Endpoint source;
    Endpoint target;
    Tables tables;
    InitialCopy initial_copy;
    SchemaMode schema = SchemaMode::copy;
    Apply apply;
    Control control;
    Cutover cutover;
    Reconnect reconnect;
    Log log;

    /// Object names derived from `name`.
    [[nodiscard]] std::string slot_name() const { return "pgshift_" + name; }
    [[nodiscard]] std::string publication_name() const { return "pgshift_" + name; }
    [[nodiscard]] std::string origin_name(int worker) const { return "pgshift_" + name + "_w" + std::to_string(worker); }
    /// A regular expression matching every origin_name() of this migration, whatever the worker.
    [[nodiscard]] std::string origin_pattern() const { return "^pgshift_" + name + "_w[0-9]+$"; }
};

/// Thrown by the loaders; `problems` holds the messages in document order (at most 100,
/// then "... and N more problems"), what() joins them with newlines.
class ConfigErrors : public ConfigError {
public:
    explicit ConfigErrors(std::vector<std::string> problems);
    [[nodiscard]] const std::vector<std::string>& problems() const { return problems_; }

private:
    std::vector<std::string> problems_;
};

/// Looks up an environment variable; std::nullopt when unset. Injected for tests.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

/// The process environment (getenv).
[[nodiscard]] EnvLookup process_env();

/// Parses and validates YAML text. `origin` names the source in messages (usually the file path).
[[nodiscard]] Config load_from_string(const std::string& yaml, const std::string& origin, const EnvLookup& env);

/// Reads and loads a file (or a pipe); an unreadable file, a directory or more than 1 MiB is a
/// ConfigErrors too.
[[nodiscard]] Config load_from_file(const std::string& path, const EnvLookup& env);

/// The bearer token in `path` (control.token_file), surrounding whitespace removed; "" when
/// `path` is empty. Throws ConfigError, its message starting "control.token_file: ", when the
/// file cannot be opened (with strerror's reason), is not a regular file, is larger than
/// 4096 bytes, or holds no token. Never reads more than 4097 bytes and never blocks on a FIFO.
[[nodiscard]] std::string read_token_file(const std::string& path);

/// A conninfo with its password (and any other secret) replaced by "********": safe to log.
[[nodiscard]] std::string redact_conninfo(const std::string& conninfo);

} // namespace pgshift::config
