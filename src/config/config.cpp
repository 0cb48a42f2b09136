// Strict loader for the YAML configuration of SPEC section 2, driven by one table of keys; the
// table also gives diff() for a reload. Plus conninfo redaction and the token file reader.
//
// Design notes
// - k_keys is the schema: one row per key with its dotted path, whether it is required, whether
//   a SIGHUP may apply it, and a rule naming its type, its limits (with the message for a value
//   outside them) and where it is stored in Config. Everything that knows about keys reads it:
//   which keys each map may hold (unknown keys, "did you mean" suggestions), how each value is
//   read, keys() and diff(). Defaults are defined once, by the initialisers in config.hpp; a key
//   absent from the file keeps its default.
// - Rules that involve several keys (fence: command needs a fence_command, ...) are a short list
//   of explicit checks after the table pass (check_rules). Each one runs only on values that were
//   read without a problem, so a mistake is reported once.
// - One Loader walks the document once. Every check appends a Problem and carries on, so a
//   single run reports everything; the problems are sorted by position and thrown together.
// - Maps are walked by iteration, never by lookup: yaml-cpp 0.7 keeps duplicate keys silently
//   and operator[] returns the first, so iteration is the only way to see the second one.
// - Types are decided by us, not by yaml-cpp's as<T>(): as<bool> accepts yes/no/on/off and
//   as<int> accepts "0x10". A quoted scalar ("4") is a string and is rejected where a number or
//   a bool is expected; an unquoted ${VAR} is fine there because it is a plain scalar.
// - A value whose key is secret (conninfo, token_file) is never echoed: not raw, not expanded,
//   not through libpq's messages (which quote fragments of the input, see sanitize_libpq_message).
// - Every message is "<origin>:<line>:<col>: <key.path>: <problem>"; problems of the document as
//   a whole (syntax, empty, not a map, unreadable file) use the path "(root)". A missing key is
//   reported at its parent map.
// - yaml-cpp marks are 0-based; messages are 1-based. An empty value (`key:` at end of line)
//   is marked at the next token, so problems about null values point at their key instead.
// - Bounded work for hostile or mistaken input (issue 7): a document over 1 MiB is refused
//   before parsing, at most 100 problems are reported (then one line counting the rest), and
//   files are read through read_bounded, which never reads more than its limit + 1 bytes and
//   refuses directories (and, for the token, anything but a regular file).
// - Numbers are finite and within a range that keeps the daemon sane: a reconnect delay of
//   0.5 ms spins, a factor of 1e300 overflows the next delay.
#include "pgshift/config/config.hpp"

#include "pgshift/common/address.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace pgshift::config {

namespace {

constexpr int k_min_workers = 1;
constexpr int k_max_workers = 64;
constexpr std::uint64_t k_min_queue_bytes = std::uint64_t{1024} * 1024;
constexpr std::size_t k_max_name_length = 40;
constexpr std::size_t k_max_echo_length = 60;
constexpr std::string_view k_redacted = "********";
constexpr std::size_t k_max_config_bytes = std::size_t{1024} * 1024;
constexpr std::string_view k_max_config_text = "1048576 bytes (1 MiB)";
constexpr std::size_t k_max_problems = 100;
constexpr std::size_t k_max_token_bytes = 4096;

// Inclusive bounds unless min_exclusive; `text` is the message for a value outside them.
struct NumberRange {
    double min;
    bool min_exclusive;
    double max;
    std::string_view text;
};

// Below 0.1 s the reconnect loop spins; above an hour nobody waits for it.
constexpr NumberRange k_reconnect_delay_range{0.1, false, 3600, "must be between 0.1 and 3600 seconds"};
// 1 keeps the delay constant; above 10 max is reached in a step or two; 1e300 overflows the next delay.
constexpr NumberRange k_reconnect_factor_range{1, false, 10, "must be between 1 and 10"};
constexpr NumberRange k_cutover_seconds_range{0, true, 86400, "must be greater than 0 and at most 86400 seconds"};

template <typename E> struct EnumName {
    std::string_view name;
    E value;
};

constexpr EnumName<SchemaMode> k_schema_modes[] = {{"copy", SchemaMode::copy}, {"verify", SchemaMode::verify}};
constexpr EnumName<SplitTables> k_split_tables[] = {
    {"auto", SplitTables::automatic}, {"always", SplitTables::always}, {"never", SplitTables::never}};
constexpr EnumName<MissingRowPolicy> k_missing_row_policies[] = {{"error", MissingRowPolicy::error},
                                                                 {"skip", MissingRowPolicy::skip}};
constexpr EnumName<FenceMode> k_fence_modes[] = {
    {"read_only", FenceMode::read_only}, {"command", FenceMode::command}, {"none", FenceMode::none}};
constexpr EnumName<VerifyMode> k_verify_modes[] = {
    {"none", VerifyMode::none}, {"counts", VerifyMode::counts}, {"checksums", VerifyMode::checksums}};
constexpr EnumName<LogLevel> k_log_levels[] = {{"trace", LogLevel::trace},
                                               {"debug", LogLevel::debug},
                                               {"info", LogLevel::info},
                                               {"warn", LogLevel::warn},
                                               {"error", LogLevel::error}};
constexpr EnumName<LogFormat> k_log_formats[] = {{"text", LogFormat::text}, {"json", LogFormat::json}};

struct Position {
    int line = 1;
    int column = 1;
};

struct Problem {
    Position pos;
    std::string text;
};

// One key of a map (its first occurrence) with the full key path.
struct Entry {
    std::string path;
    YAML::Node key;
    YAML::Node value;
};

// A scalar after ${VAR} expansion.
struct Scalar {
    std::string text;
    bool quoted = false;
};

using Fields = std::map<std::string, Entry, std::less<>>;

Position position_of(const YAML::Node& node) {
    if (!node.IsDefined()) {
        return {};
    }
    const YAML::Mark mark = node.Mark();
    if (mark.is_null() || mark.line < 0 || mark.column < 0) {
        return {};
    }
    return {mark.line + 1, mark.column + 1};
}

std::string join_path(std::string_view parent, std::string_view key) {
    if (parent.empty()) {
        return std::string(key);
    }
    std::string path(parent);
    path += '.';
    path += key;
    return path;
}

// Tagged "!" by yaml-cpp when written in quotes, or explicitly !!str.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str"; }

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
    case YAML::NodeType::Null:
        return "null";
    case YAML::NodeType::Scalar:
        return is_quoted(node) ? "a quoted string" : "a scalar";
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Map:
        return "a map";
    case YAML::NodeType::Undefined:
        break;
    }
    return "nothing";
}

// Quotes a (non-secret) value for a message, cut short so a pasted blob stays readable.
std::string echo(std::string_view value) {
    std::string out = "'";
    if (value.size() > k_max_echo_length) {
        out += value.substr(0, k_max_echo_length);
        out += "...";
    } else {
        out += value;
    }
    out += '\'';
    return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
            diagonal = above;
        }
    }
    return row[b.size()];
}

// The candidate closest to `word`, when it is close enough to be a plausible typo.
std::optional<std::string_view> closest(std::string_view word, std::span<const std::string_view> candidates) {
    std::optional<std::string_view> best;
    std::size_t best_distance = 0;
    for (const std::string_view candidate : candidates) {
        const std::size_t distance = edit_distance(word, candidate);
        const std::size_t limit = std::max<std::size_t>(2, std::max(word.size(), candidate.size()) / 3);
        if (distance <= limit && (!best || distance < best_distance)) {
            best = candidate;
            best_distance = distance;
        }
    }
    return best;
}

bool is_env_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
        return false;
    }
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; });
}

// libpq quotes fragments of the input in its messages ("missing "=" after "cret""), which could
// be part of a password. Keep only the fixed one-character tokens libpq itself quotes.
std::string sanitize_libpq_message(std::string_view message) {
    std::string out;
    std::size_t i = 0;
    while (i < message.size()) {
        const std::size_t open = message.find('"', i);
        if (open == std::string_view::npos) {
            out += message.substr(i);
            break;
        }
        const std::size_t close = message.find('"', open + 1);
        if (close == std::string_view::npos) {
            out += message.substr(i, open - i);
            out += "\"...\"";
            break;
        }
        out += message.substr(i, open - i);
        const std::string_view quoted = message.substr(open + 1, close - open - 1);
        const bool fixed_token = quoted == "=" || quoted == "]" || quoted == ":" || quoted == "/";
        out += '"';
        out += fixed_token ? quoted : std::string_view("...");
        out += '"';
        i = close + 1;
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
        out.pop_back();
    }
    return out;
}

// For libpq's `invalid connection option "x"`: the nearest real keyword. The bad keyword itself
// is not echoed (see sanitize_libpq_message), only a libpq keyword name is.
std::string conninfo_keyword_hint(std::string_view message) {
    constexpr std::string_view prefix = "invalid connection option \"";
    if (message.substr(0, prefix.size()) != prefix) {
        return {};
    }
    const std::size_t end = message.find('"', prefix.size());
    if (end == std::string_view::npos) {
        return {};
    }
    const std::string_view bad = message.substr(prefix.size(), end - prefix.size());
    std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> defaults(PQconndefaults(), &PQconninfoFree);
    if (!defaults) {
        return {};
    }
    std::vector<std::string_view> keywords;
    for (const PQconninfoOption* option = defaults.get(); option->keyword != nullptr; ++option) {
        keywords.emplace_back(option->keyword);
    }
    if (const auto near = closest(bad, keywords)) {
        return " (did you mean \"" + std::string(*near) + "\"?)";
    }
    return {};
}

struct ListenAddress {
    bool loopback = false;
};

bool is_hostname(std::string_view host) {
    if (host.empty() || host.size() > 253) {
        return false;
    }
    std::size_t start = 0;
    while (start <= host.size()) {
        const std::size_t dot = std::min(host.find('.', start), host.size());
        const std::string_view label = host.substr(start, dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
            return false;
        }
        for (const char c : label) {
            if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-') {
                return false;
            }
        }
        start = dot + 1;
    }
    return true;
}

// host:port with host an IPv4 address, a bracketed IPv6 address or a hostname. Returns the
// reason on failure; hostnames are not resolved here (DNS may not be up when the config is checked).
std::optional<ListenAddress> parse_listen(std::string_view text, std::string& why) {
    const auto split = parse_host_port(text, why);
    if (!split) {
        return std::nullopt;
    }
    if (split->port == 0) {
        why = "the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    const std::string& host = split->host;
    ListenAddress address;
    if (split->bracketed) {
        in6_addr v6{};
        if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) {
            why = "not a valid IPv6 address between [ and ]";
            return std::nullopt;
        }
        const bool mapped_loopback = IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
        address.loopback = IN6_IS_ADDR_LOOPBACK(&v6) || mapped_loopback;
    } else {
        const bool dotted_numbers = std::all_of(host.begin(), host.end(), [](char c) {
            return std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '.';
        });
        if (dotted_numbers) {
            in_addr v4{};
            if (inet_pton(AF_INET, host.c_str(), &v4) != 1) {
                why = "not a valid IPv4 address";
                return std::nullopt;
            }
            address.loopback = (ntohl(v4.s_addr) >> 24) == 127;
        } else if (is_hostname(host)) {
            std::string lower(host);
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            address.loopback = lower == "localhost";
        } else {
            why = "not a valid IPv4 address or hostname";
            return std::nullopt;
        }
    }
    return address;
}


// Shortest text that reads back as the same double: 0.5, 30, 3600.
std::string format_number(double value) {
    char buffer[32];
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
    return ec == std::errc() ? std::string(buffer, end) : std::to_string(value);
}

std::string_view file_kind(mode_t mode) {
    if (S_ISDIR(mode)) {
        return "a directory";
    }
    if (S_ISCHR(mode)) {
        return "a character device";
    }
    if (S_ISBLK(mode)) {
        return "a block device";
    }
    if (S_ISFIFO(mode)) {
        return "a FIFO";
    }
    if (S_ISSOCK(mode)) {
        return "a socket";
    }
    return "a special file";
}

struct BoundedRead {
    enum class Status { ok, os_error, not_regular, too_large };
    Status status = Status::ok;
    std::string text;                  // ok: the whole content
    std::string reason;                // os_error: strerror; not_regular: what it is ("a directory")
    std::optional<std::uint64_t> size; // too_large: the size fstat saw, when it is above the limit
};

// Reads `path` when it holds at most `limit` bytes. Never reads more than limit + 1 bytes, so
// /dev/zero or a huge file cannot exhaust memory. Directories are refused; with `regular_only`
// so are devices, FIFOs and sockets, and the open does not wait for a FIFO's writer. Without
// it a pipe is read (a config from `<(envsubst < file)`).
BoundedRead read_bounded(const std::string& path, std::size_t limit, bool regular_only) {
    BoundedRead result;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
    if (fd < 0) {
        result.status = BoundedRead::Status::os_error;
        result.reason = std::strerror(errno);
        return result;
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } const closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        result.status = BoundedRead::Status::os_error;
        result.reason = std::strerror(errno);
        return result;
    }
    if (S_ISDIR(st.st_mode) || (regular_only && !S_ISREG(st.st_mode))) {
        result.status = BoundedRead::Status::not_regular;
        result.reason = file_kind(st.st_mode);
        return result;
    }
    std::string text(limit + 1, '\0');
    std::size_t used = 0;
    while (used < text.size()) {
        const ssize_t n = ::read(fd, text.data() + used, text.size() - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            result.status = BoundedRead::Status::os_error;
            result.reason = std::strerror(errno);
            return result;
        }
        if (n == 0) {
            break;
        }
        used += static_cast<std::size_t>(n);
    }
    if (used > limit) {
        result.status = BoundedRead::Status::too_large;
        if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > limit) {
            result.size = static_cast<std::uint64_t>(st.st_size);
        }
        return result;
    }
    text.resize(used);
    result.text = std::move(text);
    return result;
}

std::string too_large_config(std::optional<std::uint64_t> size) {
    return "the configuration is " + (size ? std::to_string(*size) + " bytes, more" : std::string("more")) +
           " than the limit of " + std::string(k_max_config_text);
}

// ---------------------------------------------------------------------------------------------
// The table of keys

// Checks of a string beyond its type: the problem, or "" when the value is fine. Only keys that
// are not secret have one, so they may echo the value.

std::string check_name(const std::string& name) {
    const bool valid_chars = std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (name.empty() || name.size() > k_max_name_length || !valid_chars) {
        return "must be 1 to 40 characters from [a-z0-9_] (it names the slot and publication), got " + echo(name);
    }
    return {};
}

std::string check_listen(const std::string& listen) {
    std::string why;
    if (!parse_listen(listen, why)) {
        return "expected host:port (IPv4, [IPv6] or hostname; port 1-65535): " + why + ", got " + echo(listen);
    }
    return {};
}

// Existence and permissions are the daemon's to check at start: the loader also runs under
// `pgshift check` on another host.
std::string check_spill_dir(const std::string& dir) {
    if (!dir.empty() && dir.front() != '/') {
        return "must be an absolute path (or empty for the default: $STATE_DIRECTORY, $TMPDIR or /var/tmp), got " +
               echo(dir);
    }
    return {};
}

// The member a path of member pointers leads to: member<&Config::apply, &Apply::workers>(config)
// is config.apply.workers, const when config is.
template <auto... Path, typename Object> constexpr auto& member(Object& object) { return (object .* ... .* Path); }

template <auto... Path>
using MemberType = std::remove_cvref_t<decltype(member<Path...>(std::declval<Config&>()))>;

// Where a value is stored in Config. Two plain function pointers, so that rows for members of
// different structs fit in one constexpr array.
template <typename T> struct Slot {
    T& (*ref)(Config&);
    const T& (*get)(const Config&);
};

template <auto... Path> constexpr Slot<MemberType<Path...>> at() {
    using T = MemberType<Path...>;
    return {[](Config& config) -> T& { return member<Path...>(config); },
            [](const Config& config) -> const T& { return member<Path...>(config); }};
}

// One rule per type of value: its limits and its slot. Loader::read_key reads each kind,
// same_value compares it, TypeOf names it for keys().
using TextCheck = std::string (*)(const std::string& value);

struct Text { // any scalar; then `check`, when there is one
    Slot<std::string> slot;
    TextCheck check = nullptr;
    bool secret = false; // may hold a credential (a shell command): never shown (shown_value)
};
struct Conninfo { // not empty and accepted by PQconninfoParse; secret, never echoed
    Slot<std::string> slot;
};
struct Flag { // true or false, unquoted
    Slot<bool> slot;
};
struct Integer { // a decimal integer from min to max
    Slot<int> slot;
    int min;
    int max;
};
struct ByteSize { // a decimal number of bytes, at least min (min_text says it in messages)
    Slot<std::uint64_t> slot;
    std::uint64_t min;
    std::string_view min_text;
};
struct Number { // a finite decimal number within range; `expected` names it in messages
    Slot<double> slot;
    std::string_view expected;
    NumberRange range;
};
struct Choice { // one of names; an enum member, made by choice<>()
    std::span<const std::string_view> names;
    std::size_t (*get)(const Config&); // the index in names of the stored value
    void (*set)(Config&, std::size_t); // stores the value names[index] stands for
};
struct Globs { // a list of schema.table globs
    Slot<std::vector<std::string>> slot;
};

using Rule = std::variant<Text, Conninfo, Flag, Integer, ByteSize, Number, Choice, Globs>;

template <typename E, std::size_t N>
constexpr std::array<std::string_view, N> names_of(const EnumName<E> (&names)[N]) {
    std::array<std::string_view, N> out{};
    for (std::size_t i = 0; i < N; ++i) {
        out[i] = names[i].name;
    }
    return out;
}

template <const auto& Names> constexpr auto k_names = names_of(Names);

// The Choice of an enum member, from the table of its names:
// choice<k_fence_modes, &Config::cutover, &Cutover::fence>().
template <const auto& Names, auto... Path> constexpr Choice choice() {
    using E = MemberType<Path...>;
    static_assert(std::is_same_v<E, decltype(Names[0].value)>, "the names are not those of the member's enum");
    return {k_names<Names>,
            [](const Config& config) {
                const E value = member<Path...>(config);
                std::size_t index = 0;
                while (index < std::size(Names) && Names[index].value != value) {
                    ++index;
                }
                return index;
            },
            [](Config& config, std::size_t index) { member<Path...>(config) = Names[index].value; }};
}

enum Need : bool { defaulted = false, required = true };
enum OnSighup : bool { restart = false, reload = true };

struct Key {
    std::string_view path; // "cutover.max_lag_seconds": a top-level key or one in a section
    Need need;             // required: no default, the file must set it
    OnSighup on_sighup;    // reload: a SIGHUP may apply a new value; restart: only a restart can
    Rule rule;
};

// The schema of SPEC section 2, one row per key: path, need, SIGHUP, then the rule (type, limits
// and the member it is stored in). The order is that of messages ("expected one of: ..." lists
// the keys of a map in it; reconnect comes before cutover as it always has), of keys() and of
// diff(). reload marks what a running daemon can take on at a SIGHUP (issue 12): logging, the
// token, the cutover settings, the backoff and the missing-row policy, all read where they are
// used. The others are built at start into slots, connections, workers and buffers.
constexpr Key k_keys[] = {
    {"name", required, restart, Text{at<&Config::name>(), check_name}},
    {"source.conninfo", required, restart, Conninfo{at<&Config::source, &Endpoint::conninfo>()}},
    {"target.conninfo", required, restart, Conninfo{at<&Config::target, &Endpoint::conninfo>()}},
    {"tables.include", defaulted, restart, Globs{at<&Config::tables, &Tables::include>()}},
    {"tables.exclude", defaulted, restart, Globs{at<&Config::tables, &Tables::exclude>()}},
    {"initial_copy.enabled", defaulted, restart, Flag{at<&Config::initial_copy, &InitialCopy::enabled>()}},
    {"initial_copy.workers", defaulted, restart,
     Integer{at<&Config::initial_copy, &InitialCopy::workers>(), k_min_workers, k_max_workers}},
    {"initial_copy.split_tables", defaulted, restart,
     choice<k_split_tables, &Config::initial_copy, &InitialCopy::split_tables>()},
    {"schema", defaulted, restart, choice<k_schema_modes, &Config::schema>()},
    {"apply.workers", defaulted, restart, Integer{at<&Config::apply, &Apply::workers>(), k_min_workers, k_max_workers}},
    {"apply.on_missing_row", defaulted, reload,
     choice<k_missing_row_policies, &Config::apply, &Apply::on_missing_row>()},
    {"apply.max_queue_bytes", defaulted, restart,
     ByteSize{at<&Config::apply, &Apply::max_queue_bytes>(), k_min_queue_bytes, "1048576 (1 MiB)"}},
    {"apply.spill_dir", defaulted, restart, Text{at<&Config::apply, &Apply::spill_dir>(), check_spill_dir}},
    {"control.listen", defaulted, restart, Text{at<&Config::control, &Control::listen>(), check_listen}},
    {"control.token_file", defaulted, reload, Text{at<&Config::control, &Control::token_file>()}},
    {"reconnect.min_delay_seconds", defaulted, reload,
     Number{at<&Config::reconnect, &Reconnect::min_delay_seconds>(), "a number of seconds", k_reconnect_delay_range}},
    {"reconnect.max_delay_seconds", defaulted, reload,
     Number{at<&Config::reconnect, &Reconnect::max_delay_seconds>(), "a number of seconds", k_reconnect_delay_range}},
    {"reconnect.factor", defaulted, reload,
     Number{at<&Config::reconnect, &Reconnect::factor>(), "a number", k_reconnect_factor_range}},
    {"cutover.fence", defaulted, reload, choice<k_fence_modes, &Config::cutover, &Cutover::fence>()},
    {"cutover.fence_command", defaulted, reload, Text{.slot = at<&Config::cutover, &Cutover::fence_command>(), .secret = true}},
    {"cutover.unfence_command", defaulted, reload, Text{.slot = at<&Config::cutover, &Cutover::unfence_command>(), .secret = true}},
    {"cutover.switch_command", defaulted, reload, Text{.slot = at<&Config::cutover, &Cutover::switch_command>(), .secret = true}},
    {"cutover.max_lag_seconds", defaulted, reload,
     Number{at<&Config::cutover, &Cutover::max_lag_seconds>(), "a number of seconds", k_cutover_seconds_range}},
    {"cutover.timeout_seconds", defaulted, reload,
     Number{at<&Config::cutover, &Cutover::timeout_seconds>(), "a number of seconds", k_cutover_seconds_range}},
    {"cutover.sync_sequences", defaulted, reload, Flag{at<&Config::cutover, &Cutover::sync_sequences>()}},
    {"cutover.verify", defaulted, reload, choice<k_verify_modes, &Config::cutover, &Cutover::verify>()},
    {"log.level", defaulted, reload, choice<k_log_levels, &Config::log, &Log::level>()},
    {"log.format", defaulted, reload, choice<k_log_formats, &Config::log, &Log::format>()},
};

struct SplitPath {
    std::string_view section; // "" for a top-level key
    std::string_view leaf;
};

constexpr SplitPath split_path(std::string_view path) {
    const std::size_t dot = path.find('.');
    if (dot == std::string_view::npos) {
        return {"", path};
    }
    return {path.substr(0, dot), path.substr(dot + 1)};
}

// The loader walks a top level and one level of sections, and a name is a key or a section.
constexpr bool table_is_well_formed() {
    for (std::size_t i = 0; i < std::size(k_keys); ++i) {
        const std::string_view path = k_keys[i].path;
        const std::string_view leaf = split_path(path).leaf;
        if (leaf.empty() || leaf.find('.') != std::string_view::npos || path.front() == '.') {
            return false;
        }
        for (std::size_t j = 0; j < std::size(k_keys); ++j) {
            const bool duplicate = i != j && path == k_keys[j].path;
            const bool key_and_section = split_path(k_keys[j].path).section == path;
            if (duplicate || key_and_section) {
                return false;
            }
        }
    }
    return true;
}
static_assert(table_is_well_formed(), "k_keys: a duplicate path, a path nested twice, or a key that is a section");

// The row of `path`, for the rules across keys. consteval: a path that is not in the table does
// not compile.
consteval std::size_t row_of(std::string_view path) {
    for (std::size_t row = 0; row < std::size(k_keys); ++row) {
        if (k_keys[row].path == path) {
            return row;
        }
    }
    throw InternalError("config table: no key " + std::string(path));
}

bool same_value(const Rule& rule, const Config& a, const Config& b) {
    return std::visit(
        [&](const auto& typed) {
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(typed)>, Choice>) {
                return typed.get(a) == typed.get(b);
            } else {
                return typed.slot.get(a) == typed.slot.get(b);
            }
        },
        rule);
}

struct TypeOf {
    constexpr ValueType operator()(const Text& /*rule*/) const { return ValueType::string; }
    constexpr ValueType operator()(const Conninfo& /*rule*/) const { return ValueType::conninfo; }
    constexpr ValueType operator()(const Flag& /*rule*/) const { return ValueType::boolean; }
    constexpr ValueType operator()(const Integer& /*rule*/) const { return ValueType::integer; }
    constexpr ValueType operator()(const ByteSize& /*rule*/) const { return ValueType::byte_size; }
    constexpr ValueType operator()(const Number& /*rule*/) const { return ValueType::number; }
    constexpr ValueType operator()(const Choice& /*rule*/) const { return ValueType::choice; }
    constexpr ValueType operator()(const Globs& /*rule*/) const { return ValueType::glob_list; }
};

// What keys() shows of the table.
constexpr auto k_key_infos = [] {
    std::array<KeyInfo, std::size(k_keys)> infos{};
    for (std::size_t row = 0; row < infos.size(); ++row) {
        const Key& key = k_keys[row];
        const Choice* choice = std::get_if<Choice>(&key.rule);
        infos[row] = KeyInfo{key.path, std::visit(TypeOf{}, key.rule), key.need == required,
                             key.on_sighup == reload,
                             choice != nullptr ? choice->names : std::span<const std::string_view>()};
    }
    return infos;
}();

// The maps of a document as the table nests them: the top level, then one map per section in
// table order. `names` are the keys a map may hold (at the top level, sections too).
struct Section {
    std::string_view path; // "" for the top level
    std::vector<std::string_view> names;
};

const std::vector<Section>& sections() {
    static const std::vector<Section> built = [] {
        std::vector<Section> out{Section{"", {}}};
        for (const Key& key : k_keys) {
            const SplitPath split = split_path(key.path);
            auto it = std::find_if(out.begin(), out.end(), [&](const Section& s) { return s.path == split.section; });
            if (it == out.end()) {
                out.front().names.push_back(split.section);
                it = out.insert(out.end(), Section{split.section, {}});
            }
            it->names.push_back(split.leaf);
        }
        return out;
    }();
    return built;
}

std::span<const std::string_view> names_in(std::string_view section) {
    for (const Section& s : sections()) {
        if (s.path == section) {
            return s.names;
        }
    }
    return {};
}

// "conninfo" for source: the keys that make a missing section a missing required key.
std::string required_keys_in(std::string_view section) {
    std::string out;
    for (const Key& key : k_keys) {
        const auto [in, leaf] = split_path(key.path);
        if (key.need == required && in == section) {
            out += (out.empty() ? "" : ", ") + std::string(leaf);
        }
    }
    return out;
}

std::string unknown_key_hint(std::string_view parent, std::string_view key,
                             std::span<const std::string_view> siblings) {
    if (const auto near = closest(key, siblings)) {
        return " (did you mean '" + join_path(parent, *near) + "'?)";
    }
    // A known key at the wrong level, e.g. `workers:` at the top.
    std::vector<std::string> elsewhere;
    for (const Section& section : sections()) {
        if (section.path == parent) {
            continue;
        }
        for (const std::string_view candidate : section.names) {
            if (candidate == key) {
                elsewhere.push_back(join_path(section.path, candidate));
            }
        }
    }
    std::string hint;
    if (!elsewhere.empty()) {
        hint = " (did you mean ";
        for (std::size_t i = 0; i < elsewhere.size(); ++i) {
            hint += (i == 0 ? "'" : " or '") + elsewhere[i] + "'";
        }
        return hint + "?)";
    }
    hint = " (expected one of: ";
    for (std::size_t i = 0; i < siblings.size(); ++i) {
        hint += (i == 0 ? "" : ", ") + std::string(siblings[i]);
    }
    return hint + ")";
}

bool is_loopback_listen(const std::string& listen) {
    std::string why;
    const auto address = parse_listen(listen, why);
    return address && address->loopback;
}

// What the table pass saw of one key, for the rules across keys.
struct Seen {
    bool present = false; // the file sets it
    bool valid = false;   // and its value was stored
    Position at;          // of its value (of its key for a null value)
};

class Loader {
public:
    Loader(std::string origin, const EnvLookup& env) : origin_(std::move(origin)), env_(env) {}

    // Step 1 checks the top-level map; step 2 reads every key of the table, checking the map
    // of its section on first use; step 3 applies the rules across keys.
    Config load(const YAML::Node& root) {
        Config config;
        const Fields top = check_map(root, "", sections().front().names);
        std::map<std::string_view, std::optional<Fields>> maps; // per section; nullopt: not there
        std::vector<Seen> seen(std::size(k_keys));
        for (std::size_t row = 0; row < std::size(k_keys); ++row) {
            const Key& key = k_keys[row];
            const auto [section, leaf] = split_path(key.path);
            const Fields* fields = &top;
            Position parent = position_of(root);
            if (!section.empty()) {
                auto [it, first_use] = maps.try_emplace(section);
                if (first_use) {
                    it->second = open_section(top, section, root);
                }
                if (!it->second) {
                    continue;
                }
                fields = &*it->second;
                parent = position_of(find(top, section)->value);
            }
            const Entry* entry = find(*fields, leaf);
            if (entry == nullptr) {
                if (key.need == required) {
                    add(parent, key.path, "missing required key");
                }
                continue;
            }
            seen[row] = Seen{true, read_key(*entry, key.rule, config), value_position(*entry)};
        }
        check_rules(config, seen);
        return config;
    }

    void add(Position pos, std::string_view path, std::string_view problem) {
        std::string text = origin_ + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) + ": ";
        text += path;
        text += ": ";
        text += problem;
        problems_.push_back({pos, std::move(text)});
    }

    [[noreturn]] void throw_problems() {
        std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
            return std::pair(a.pos.line, a.pos.column) < std::pair(b.pos.line, b.pos.column);
        });
        // A flood (a pasted file of unknown keys) would bury the first problem: keep the first
        // ones in document order and count the rest.
        const std::size_t shown = std::min(problems_.size(), k_max_problems);
        std::vector<std::string> texts;
        texts.reserve(shown + 1);
        for (std::size_t i = 0; i < shown; ++i) {
            texts.push_back(std::move(problems_[i].text));
        }
        if (const std::size_t rest = problems_.size() - shown; rest > 0) {
            texts.push_back("... and " + std::to_string(rest) + (rest == 1 ? " more problem" : " more problems"));
        }
        throw ConfigErrors(std::move(texts));
    }

    [[nodiscard]] bool failed() const { return !problems_.empty(); }

private:
    static const Entry* find(const Fields& fields, std::string_view key) {
        const auto it = fields.find(key);
        return it == fields.end() ? nullptr : &it->second;
    }

    // Null values are marked at the following token, so point at the key for them.
    // List items have no key node (its mark is null); they keep the value's position.
    static Position value_position(const Entry& entry) {
        if (entry.value.IsNull() && !entry.key.Mark().is_null()) {
            return position_of(entry.key);
        }
        return position_of(entry.value);
    }

    void add(const Entry& entry, std::string_view problem) { add(value_position(entry), entry.path, problem); }

    // Walks a map by iteration, reporting non-string, unknown and duplicate keys.
    Fields check_map(const YAML::Node& map, std::string_view parent, std::span<const std::string_view> allowed) {
        Fields fields;
        std::map<std::string, Position, std::less<>> seen;
        for (auto it = map.begin(); it != map.end(); ++it) {
            const YAML::Node key = it->first;
            const Position key_pos = position_of(key);
            if (!key.IsScalar()) {
                add(key_pos, parent.empty() ? "(root)" : parent, "keys must be strings, got " + describe(key));
                continue;
            }
            const std::string& name = key.Scalar();
            std::string path = join_path(parent, name);
            if (const auto first = seen.find(name); first != seen.end()) {
                add(key_pos, path,
                    "duplicate key (first defined at line " + std::to_string(first->second.line) + ":" +
                        std::to_string(first->second.column) + ")");
                continue;
            }
            seen.emplace(name, key_pos);
            if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
                add(key_pos, path, "unknown key" + unknown_key_hint(parent, name, allowed));
                continue;
            }
            fields.emplace(name, Entry{std::move(path), key, it->second});
        }
        return fields;
    }

    // The map of an optional section, or nullopt (reported) when it is something else.
    std::optional<Fields> section(const Entry& entry, std::span<const std::string_view> allowed) {
        if (!entry.value.IsMap()) {
            add(entry, "expected a map, got " + describe(entry.value));
            return std::nullopt;
        }
        return check_map(entry.value, entry.path, allowed);
    }

    // Expands ${VAR}, ${VAR:-default} and $$. A '$' followed by anything else is kept, so
    // passwords such as "pa$word" survive. The value is never put into a message.
    std::optional<std::string> expand(const std::string& raw, const Entry& entry) {
        std::string out;
        bool ok = true;
        std::size_t i = 0;
        while (i < raw.size()) {
            const char c = raw[i];
            if (c != '$' || i + 1 >= raw.size() || (raw[i + 1] != '$' && raw[i + 1] != '{')) {
                out += c;
                ++i;
                continue;
            }
            if (raw[i + 1] == '$') {
                out += '$';
                i += 2;
                continue;
            }
            const std::size_t close = raw.find('}', i + 2);
            if (close == std::string::npos) {
                add(entry, "unterminated ${ (write $$ for a literal $)");
                return std::nullopt;
            }
            const std::string_view inner = std::string_view(raw).substr(i + 2, close - i - 2);
            const std::size_t dash = inner.find(":-");
            const std::string_view name = inner.substr(0, dash);
            i = close + 1;
            if (!is_env_name(name)) {
                add(entry, "malformed ${...}: expected ${NAME} or ${NAME:-default} with NAME made of "
                           "letters, digits and _ (write $$ for a literal $)");
                ok = false;
                continue;
            }
            std::optional<std::string> value;
            if (env_) {
                value = env_(std::string(name));
            }
            if (dash != std::string_view::npos) {
                const std::string_view fallback = inner.substr(dash + 2);
                if (fallback.find("${") != std::string_view::npos) {
                    add(entry,
                        "nested ${...} inside the default of ${" + std::string(name) + ":-...} is not supported");
                    ok = false;
                    continue;
                }
                // As in the shell, :- also replaces a variable that is set but empty.
                if (!value || value->empty()) {
                    value = std::string(fallback);
                }
            }
            if (!value) {
                add(entry, "environment variable " + std::string(name) + " is not set (use ${" + std::string(name) +
                               ":-default} for a default)");
                ok = false;
                continue;
            }
            out += *value;
        }
        if (!ok) {
            return std::nullopt;
        }
        return out;
    }

    // The expanded text of a scalar value, or nullopt (reported) for a map, list or null.
    std::optional<Scalar> scalar(const Entry& entry, std::string_view expected) {
        if (!entry.value.IsScalar()) {
            add(entry, "expected " + std::string(expected) + ", got " + describe(entry.value));
            return std::nullopt;
        }
        auto text = expand(entry.value.Scalar(), entry);
        if (!text) {
            return std::nullopt;
        }
        return Scalar{std::move(*text), is_quoted(entry.value)};
    }

    static std::string got(const Scalar& value) {
        return (value.quoted ? "got the quoted string " : "got ") + echo(value.text);
    }

    // Any scalar is a string. Callers that validate the content decide whether it may be echoed.
    std::optional<std::string> read_string(const Entry& entry) {
        auto value = scalar(entry, "a string");
        if (!value) {
            return std::nullopt;
        }
        return std::move(value->text);
    }

    std::optional<bool> read_bool(const Entry& entry) {
        const auto value = scalar(entry, "true or false");
        if (!value) {
            return std::nullopt;
        }
        if (!value->quoted && value->text == "true") {
            return true;
        }
        if (!value->quoted && value->text == "false") {
            return false;
        }
        add(entry, "expected true or false, " + got(*value));
        return std::nullopt;
    }

    std::optional<int> read_int(const Entry& entry, int min, int max) {
        const auto value = scalar(entry, "an integer");
        if (!value) {
            return std::nullopt;
        }
        long long number = 0;
        const char* first = value->text.data();
        const char* last = first + value->text.size();
        const auto [end, ec] = std::from_chars(first, last, number);
        if (value->quoted || value->text.empty() || end != last ||
            (ec != std::errc() && ec != std::errc::result_out_of_range)) {
            add(entry, "expected an integer, " + got(*value));
            return std::nullopt;
        }
        if (ec == std::errc::result_out_of_range || number < min || number > max) {
            add(entry,
                "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + value->text);
            return std::nullopt;
        }
        return static_cast<int>(number);
    }

    std::optional<std::uint64_t> read_uint64(const Entry& entry, std::uint64_t min, std::string_view min_text) {
        const auto value = scalar(entry, "an integer");
        if (!value) {
            return std::nullopt;
        }
        const std::string& text = value->text;
        const bool negative = text.size() > 1 && text.front() == '-' &&
                              std::all_of(text.begin() + 1, text.end(),
                                          [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
        const std::string too_small = "must be at least " + std::string(min_text) + ", got " + text;
        if (!value->quoted && negative) {
            add(entry, too_small);
            return std::nullopt;
        }
        std::uint64_t number = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (value->quoted || text.empty() || end != text.data() + text.size() ||
            (ec != std::errc() && ec != std::errc::result_out_of_range)) {
            add(entry, "expected an integer, " + got(*value));
            return std::nullopt;
        }
        if (ec == std::errc::result_out_of_range) {
            add(entry, "too large, got " + text);
            return std::nullopt;
        }
        if (number < min) {
            add(entry, too_small);
            return std::nullopt;
        }
        return number;
    }

    // A finite decimal number within `range`. inf, nan, hex and quoted numbers are not numbers
    // here; a literal beyond what a double holds (1e400, 1e-400) is out of any range.
    std::optional<double> read_number(const Entry& entry, std::string_view expected, const NumberRange& range) {
        const auto value = scalar(entry, expected);
        if (!value) {
            return std::nullopt;
        }
        double number = 0;
        const char* first = value->text.data();
        const char* last = first + value->text.size();
        const auto [end, ec] = std::from_chars(first, last, number);
        const bool out_of_double = ec == std::errc::result_out_of_range;
        if (value->quoted || value->text.empty() || (ec != std::errc() && !out_of_double) || end != last ||
            (!out_of_double && !std::isfinite(number))) {
            add(entry, "expected " + std::string(expected) + ", " + got(*value));
            return std::nullopt;
        }
        const bool below = range.min_exclusive ? number <= range.min : number < range.min;
        if (out_of_double || below || number > range.max) {
            add(entry, std::string(range.text) + ", got " + value->text);
            return std::nullopt;
        }
        return number;
    }

    // The index of the value in `names`; matched exactly (log.level: INFO is not info).
    std::optional<std::size_t> read_choice(const Entry& entry, std::span<const std::string_view> names) {
        std::string expected = "one of ";
        for (std::size_t i = 0; i < names.size(); ++i) {
            expected += (i == 0 ? "" : ", ") + std::string(names[i]);
        }
        const auto value = scalar(entry, expected);
        if (!value) {
            return std::nullopt;
        }
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (names[i] == value->text) {
                return i;
            }
        }
        add(entry, "expected " + expected + ", got " + echo(value->text));
        return std::nullopt;
    }

    std::optional<std::vector<std::string>> read_table_globs(const Entry& entry) {
        if (!entry.value.IsSequence()) {
            add(entry, "expected a list of schema.table globs, got " + describe(entry.value));
            return std::nullopt;
        }
        std::vector<std::string> globs;
        bool ok = true;
        std::size_t index = 0;
        for (const YAML::Node& item : entry.value) {
            const Entry element{entry.path + "[" + std::to_string(index++) + "]", YAML::Node(), item};
            auto value = read_string(element);
            if (!value) {
                ok = false;
                continue;
            }
            // Exactly one dot: quoted identifiers containing dots are not supported in globs.
            const std::size_t dot = value->find('.');
            if (dot == std::string::npos || dot == 0 || dot + 1 == value->size() ||
                value->find('.', dot + 1) != std::string::npos) {
                add(element, "expected a schema.table glob such as 'public.*', got " + echo(*value));
                ok = false;
                continue;
            }
            globs.push_back(std::move(*value));
        }
        if (!ok) {
            return std::nullopt;
        }
        return globs;
    }

    // The map of a section, its unknown and duplicate keys reported; nullopt when the file has
    // no such section (a problem when the section holds a required key) or it is not a map.
    std::optional<Fields> open_section(const Fields& top, std::string_view path, const YAML::Node& root) {
        const Entry* entry = find(top, path);
        if (entry == nullptr) {
            if (const std::string required_keys = required_keys_in(path); !required_keys.empty()) {
                add(position_of(root), path, "missing required key (a map with " + required_keys + ")");
            }
            return std::nullopt;
        }
        return section(*entry, names_in(path));
    }

    // Reads a value by its rule and stores it; false (reported) when it cannot be.
    bool read_key(const Entry& entry, const Rule& rule, Config& config) {
        return std::visit([&](const auto& typed) { return read_key(entry, typed, config); }, rule);
    }

    template <typename T> static bool store(const Slot<T>& slot, Config& config, std::optional<T> value) {
        if (!value) {
            return false;
        }
        slot.ref(config) = std::move(*value);
        return true;
    }

    bool read_key(const Entry& entry, const Text& rule, Config& config) {
        auto value = read_string(entry);
        if (value && rule.check != nullptr) {
            if (const std::string problem = rule.check(*value); !problem.empty()) {
                add(entry, problem);
                return false;
            }
        }
        return store(rule.slot, config, std::move(value));
    }

    bool read_key(const Entry& entry, const Conninfo& rule, Config& config) {
        auto value = read_string(entry);
        if (!value) {
            return false;
        }
        if (value->empty()) {
            add(entry, "must not be empty");
            return false;
        }
        char* error = nullptr;
        PQconninfoOption* options = PQconninfoParse(value->c_str(), &error);
        if (options == nullptr) {
            const std::string message = error != nullptr ? error : "out of memory";
            if (error != nullptr) {
                PQfreemem(error);
            }
            add(entry, "invalid conninfo: " + sanitize_libpq_message(message) + conninfo_keyword_hint(message));
            return false;
        }
        PQconninfoFree(options);
        return store(rule.slot, config, std::move(value));
    }

    bool read_key(const Entry& entry, const Flag& rule, Config& config) {
        return store(rule.slot, config, read_bool(entry));
    }

    bool read_key(const Entry& entry, const Integer& rule, Config& config) {
        return store(rule.slot, config, read_int(entry, rule.min, rule.max));
    }

    bool read_key(const Entry& entry, const ByteSize& rule, Config& config) {
        return store(rule.slot, config, read_uint64(entry, rule.min, rule.min_text));
    }

    bool read_key(const Entry& entry, const Number& rule, Config& config) {
        return store(rule.slot, config, read_number(entry, rule.expected, rule.range));
    }

    bool read_key(const Entry& entry, const Choice& rule, Config& config) {
        const auto index = read_choice(entry, rule.names);
        if (!index) {
            return false;
        }
        rule.set(config, *index);
        return true;
    }

    bool read_key(const Entry& entry, const Globs& rule, Config& config) {
        return store(rule.slot, config, read_table_globs(entry));
    }

    // Step 3: the rules across keys. A rule applies only when the keys it reads are valid or
    // absent (their default), so a value already reported is not reported again.
    void check_rules(const Config& config, const std::vector<Seen>& seen) {
        const auto usable = [](const Seen& key) { return !key.present || key.valid; };

        // A listen address other than loopback needs a token.
        const Seen& listen = seen[row_of("control.listen")];
        const Seen& token = seen[row_of("control.token_file")];
        if (listen.valid && usable(token) && config.control.token_file.empty() &&
            !is_loopback_listen(config.control.listen)) {
            add(token.present ? token.at : listen.at, "control.token_file",
                "required when control.listen is not a loopback address (" + echo(config.control.listen) +
                    "): every POST must carry the bearer token");
        }

        // fence: command runs fence_command.
        const Seen& fence = seen[row_of("cutover.fence")];
        const Seen& command = seen[row_of("cutover.fence_command")];
        if (fence.valid && usable(command) && config.cutover.fence == FenceMode::command &&
            config.cutover.fence_command.empty()) {
            add(command.present ? command.at : fence.at, "cutover.fence_command",
                "required (non-empty) when cutover.fence is command");
        }

        // The reconnect delay grows from min to max.
        const Seen& min = seen[row_of("reconnect.min_delay_seconds")];
        const Seen& max = seen[row_of("reconnect.max_delay_seconds")];
        const Reconnect& reconnect = config.reconnect;
        if (max.present) {
            if (max.valid && usable(min) && reconnect.max_delay_seconds < reconnect.min_delay_seconds) {
                add(max.at, "reconnect.max_delay_seconds", "must not be below reconnect.min_delay_seconds");
            }
        } else if (min.valid && reconnect.min_delay_seconds > reconnect.max_delay_seconds) {
            add(min.at, "reconnect.min_delay_seconds",
                "must not be above reconnect.max_delay_seconds (" + format_number(reconnect.max_delay_seconds) +
                    " when not set), got " + format_number(reconnect.min_delay_seconds));
        }
    }

    std::string origin_;
    const EnvLookup& env_;
    std::vector<Problem> problems_;
};

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const std::string& line : lines) {
        if (!out.empty()) {
            out += '\n';
        }
        out += line;
    }
    return out;
}

} // namespace

ConfigErrors::ConfigErrors(std::vector<std::string> problems)
    : ConfigError(join_lines(problems)), problems_(std::move(problems)) {}

EnvLookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        // getenv is not thread-safe against setenv; the daemon loads its config before starting threads.
        const char* value = std::getenv(name.c_str());
        if (value == nullptr) {
            return std::nullopt;
        }
        return std::string(value);
    };
}

Config load_from_string(const std::string& yaml, const std::string& origin, const EnvLookup& env) {
    Loader loader(origin, env);
    if (yaml.size() > k_max_config_bytes) {
        loader.add(Position{}, "(root)", too_large_config(yaml.size()));
        loader.throw_problems();
    }
    std::vector<YAML::Node> documents;
    try {
        documents = YAML::LoadAll(yaml);
    } catch (const YAML::ParserException& e) {
        // e.msg without yaml-cpp's own "error at line" prefix, which is 1-based already but
        // would duplicate ours.
        const Position pos = e.mark.is_null() ? Position{} : Position{e.mark.line + 1, e.mark.column + 1};
        loader.add(pos, "(root)", "YAML syntax error: " + e.msg);
        loader.throw_problems();
    } catch (const YAML::Exception& e) {
        loader.add(Position{}, "(root)", std::string("YAML error: ") + e.msg);
        loader.throw_problems();
    }
    if (documents.empty() || documents.front().IsNull()) {
        loader.add(Position{}, "(root)", "the document is empty; expected a map with at least name, source and target");
        loader.throw_problems();
    }
    if (documents.size() > 1) {
        loader.add(position_of(documents[1]), "(root)",
                   "expected a single YAML document, found " + std::to_string(documents.size()));
    }
    const YAML::Node& root = documents.front();
    if (!root.IsMap()) {
        loader.add(position_of(root), "(root)", "expected a map at the top level, got " + describe(root));
        loader.throw_problems();
    }
    Config config = loader.load(root);
    if (loader.failed()) {
        loader.throw_problems();
    }
    return config;
}

Config load_from_file(const std::string& path, const EnvLookup& env) {
    const BoundedRead file = read_bounded(path, k_max_config_bytes, false);
    const std::string where = path + ":1:1: (root): ";
    switch (file.status) {
    case BoundedRead::Status::os_error:
        throw ConfigErrors({where + "cannot read: " + file.reason});
    case BoundedRead::Status::not_regular:
        throw ConfigErrors({where + "cannot read: is " + file.reason});
    case BoundedRead::Status::too_large:
        throw ConfigErrors({where + too_large_config(file.size)});
    case BoundedRead::Status::ok:
        break;
    }
    return load_from_string(file.text, path, env);
}

std::string redact_conninfo(const std::string& conninfo) {
    char* error = nullptr;
    PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
    if (error != nullptr) {
        PQfreemem(error);
    }
    if (options == nullptr) {
        return "<unparsable conninfo>";
    }
    std::string out;
    for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
        if (option->val == nullptr) {
            continue;
        }
        const std::string_view keyword = option->keyword;
        // dispchar "*" is libpq's own marker for secrets (password, sslpassword).
        const bool secret =
            keyword == "password" || (option->dispchar != nullptr && std::strchr(option->dispchar, '*') != nullptr);
        if (!out.empty()) {
            out += ' ';
        }
        out += keyword;
        out += '=';
        out += secret ? std::string(k_redacted) : conninfo_quote(option->val);
    }
    PQconninfoFree(options);
    return out;
}

std::string read_token_file(const std::string& path) {
    if (path.empty()) {
        return "";
    }
    const std::string key = "control.token_file: ";
    const BoundedRead file = read_bounded(path, k_max_token_bytes, true);
    switch (file.status) {
    case BoundedRead::Status::os_error:
        throw ConfigError(key + "cannot read " + path + ": " + file.reason);
    case BoundedRead::Status::not_regular:
        throw ConfigError(key + path + " is " + file.reason + ", not a regular file");
    case BoundedRead::Status::too_large:
        throw ConfigError(key + path + " is larger than " + std::to_string(k_max_token_bytes) +
                          " bytes; a token is one line");
    case BoundedRead::Status::ok:
        break;
    }
    const std::string& token = file.text;
    const auto first = token.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
        throw ConfigError(key + path + " holds no token");
    }
    const auto last = token.find_last_not_of(" \t\r\n");
    return token.substr(first, last - first + 1);
}

std::span<const KeyInfo> keys() { return k_key_infos; }

namespace {

const Key* find_key(std::string_view path) {
    for (const Key& key : k_keys) {
        if (key.path == path) {
            return &key;
        }
    }
    return nullptr;
}

std::string in_quotes(const std::string& text) { return "\"" + text + "\""; }

// A rule's value in `config` as shown_value() prints it.
struct Show {
    const Config& config;
    std::optional<std::string> operator()(const Text& rule) const {
        return rule.secret ? std::nullopt : std::optional(in_quotes(rule.slot.get(config)));
    }
    std::optional<std::string> operator()(const Conninfo& /*rule*/) const { return std::nullopt; }
    std::optional<std::string> operator()(const Flag& rule) const { return rule.slot.get(config) ? "true" : "false"; }
    std::optional<std::string> operator()(const Integer& rule) const { return std::to_string(rule.slot.get(config)); }
    std::optional<std::string> operator()(const ByteSize& rule) const { return std::to_string(rule.slot.get(config)); }
    std::optional<std::string> operator()(const Number& rule) const {
        std::array<char, 32> text{}; // shortest form that reads back the same: 0.5, 30, 1e-05
        auto [end, ec] = std::to_chars(text.data(), text.data() + text.size(), rule.slot.get(config));
        return ec == std::errc() ? std::string(text.data(), end) : std::string("?");
    }
    std::optional<std::string> operator()(const Choice& rule) const {
        const std::size_t index = rule.get(config);
        return index < rule.names.size() ? std::string(rule.names[index]) : std::string("?");
    }
    std::optional<std::string> operator()(const Globs& rule) const {
        std::string out = "[";
        for (const auto& glob : rule.slot.get(config)) {
            out += (out.size() > 1 ? ", " : "") + in_quotes(glob);
        }
        return out + "]";
    }
};

} // namespace

std::optional<std::string> shown_value(std::string_view key, const Config& config) {
    const Key* row = find_key(key);
    return row != nullptr ? std::visit(Show{config}, row->rule) : std::nullopt;
}

bool copy_value(std::string_view key, Config& to, const Config& from) {
    const Key* row = find_key(key);
    if (row == nullptr) {
        return false;
    }
    std::visit(
        [&](const auto& typed) {
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(typed)>, Choice>) {
                typed.set(to, typed.get(from));
            } else {
                typed.slot.ref(to) = typed.slot.get(from);
            }
        },
        row->rule);
    return true;
}

std::vector<ConfigChange> diff(const Config& before, const Config& after) {
    std::vector<ConfigChange> changes;
    for (const Key& key : k_keys) {
        if (!same_value(key.rule, before, after)) {
            changes.push_back({std::string(key.path), key.on_sighup == reload});
        }
    }
    return changes;
}

} // namespace pgshift::config
