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
// - The keys are one table in config.cpp (type, limits, whether a SIGHUP may apply them);
//   their defaults are the initialisers below and nowhere else. keys() shows the table; diff()
//   compares two configurations key by key, for a reload that applies what it can and names
//   the rest as needing a restart.
#pragma once

#include "pgshift/common/errors.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <vector>

namespace pgshift::config {

enum class SchemaMode { copy, verify };
/// Whether the initial copy splits a large table into page ranges copied by several sessions.
enum class SplitTables { automatic, always, never };
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
    /// automatic: split when the target is PostgreSQL 16 or later (it extends a table by many
    /// pages at once, so sessions loading one table do not queue on its extension lock); on older
    /// targets each table is copied whole by one session and loaded frozen.
    SplitTables split_tables = SplitTables::automatic;
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

    /// Not read from YAML: "" for the forward direction, "_rev" for the configuration reversed()
    /// returns. It tells the two directions' slots, publications and origins apart, so both can
    /// exist at once, even when source and target are databases of one cluster.
    std::string object_suffix;

    /// Object names derived from `name` (and the direction).
    [[nodiscard]] std::string slot_name() const { return "pgshift_" + name + object_suffix; }
    [[nodiscard]] std::string publication_name() const { return "pgshift_" + name + object_suffix; }
    [[nodiscard]] std::string origin_name(int worker) const
    {
        return "pgshift_" + name + object_suffix + "_w" + std::to_string(worker);
    }
    /// A regular expression matching every origin_name() of this direction, whatever the worker.
    [[nodiscard]] std::string origin_pattern() const { return "^pgshift_" + name + object_suffix + "_w[0-9]+$"; }
    /// Matches the origins of both directions of this migration: a transaction tagged with one
    /// of them was written by pgshift and never goes back (ARCHITECTURE rule 12).
    [[nodiscard]] std::string own_origins_pattern() const { return "^pgshift_" + name + "(_rev)?_w[0-9]+$"; }
    /// Whether `origin` matches own_origins_pattern().
    [[nodiscard]] bool is_own_origin(std::string_view origin) const;
    [[nodiscard]] bool is_reverse() const { return !object_suffix.empty(); }
    /// The configuration of the reverse direction (after a cutover): the target is the upstream,
    /// the source receives; object names carry "_rev"; no initial copy (the data is there).
    [[nodiscard]] Config reversed() const;
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

/// How a key's value is written in the file (and read by the loader).
enum class ValueType {
    string,    ///< any scalar, some with a check of their own (name, control.listen, apply.spill_dir)
    conninfo,  ///< a libpq key=value string or URI; secret
    boolean,   ///< true or false
    integer,   ///< a decimal integer within a range
    byte_size, ///< a decimal number of bytes, with a minimum
    number,    ///< a finite decimal number within a range
    choice,    ///< one of KeyInfo::choices
    glob_list, ///< a list of schema.table globs
};

/// One key of the configuration, as the loader's table describes it.
struct KeyInfo {
    std::string_view key; ///< dotted path, e.g. "cutover.max_lag_seconds"
    ValueType type = ValueType::string;
    bool required = false;                     ///< no default: the file must set it
    bool reloadable = false;                   ///< a SIGHUP may apply a new value; else it needs a restart
    std::span<const std::string_view> choices; ///< for ValueType::choice, the accepted values
};

/// Every key the loader accepts, in the table's order.
[[nodiscard]] std::span<const KeyInfo> keys();

/// A key whose value differs between two configurations.
struct ConfigChange {
    std::string key;
    bool reloadable;

    friend bool operator==(const ConfigChange&, const ConfigChange&) = default;
};

/// Every key of the table whose value differs from `before` to `after`, in table order; empty
/// when they are the same. For a SIGHUP reload: the reloadable changes can be applied, the others
/// need a restart. Values are not part of it (a conninfo may hold a password). Members of
/// Config that are not keys of the file are not compared.
[[nodiscard]] std::vector<ConfigChange> diff(const Config& before, const Config& after);

/// The value of `key` in `config` as a log line shows it: a string in double quotes, a number,
/// true or false, a choice's name, a list of quoted globs. nullopt for a key whose value may
/// hold a secret (a conninfo, a cutover command), and for a key the table does not have.
[[nodiscard]] std::optional<std::string> shown_value(std::string_view key, const Config& config);

/// Copies the value of `key` from `from` into `to` (a SIGHUP applying a reloadable key); false
/// for a key the table does not have.
bool copy_value(std::string_view key, Config& to, const Config& from);

} // namespace pgshift::config
