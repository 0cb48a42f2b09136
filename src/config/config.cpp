// Strict loader for the YAML configuration of SPEC section 2, plus conninfo redaction.
//
// Design notes
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

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
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
#include <utility>

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

// The schema: which keys each map may hold. Reading code below uses the same names.
constexpr std::string_view k_root_keys[] = {"name",    "source",  "target",    "tables", "initial_copy", "schema",
                                            "apply",   "control", "reconnect", "cutover", "log"};
constexpr std::string_view k_endpoint_keys[] = {"conninfo"};
constexpr std::string_view k_tables_keys[] = {"include", "exclude"};
constexpr std::string_view k_initial_copy_keys[] = {"enabled", "workers"};
constexpr std::string_view k_apply_keys[] = {"workers", "on_missing_row", "max_queue_bytes", "spill_dir"};
constexpr std::string_view k_control_keys[] = {"listen", "token_file"};
constexpr std::string_view k_cutover_keys[] = {
    "fence", "fence_command", "unfence_command", "max_lag_seconds", "timeout_seconds", "sync_sequences", "verify"};
constexpr std::string_view k_log_keys[] = {"level", "format"};
constexpr std::string_view k_reconnect_keys[] = {"min_delay_seconds", "max_delay_seconds", "factor"};

struct SectionSchema {
    std::string_view path;
    std::span<const std::string_view> keys;
};

// Used to suggest "apply.workers" for a `workers:` written at the wrong level.
constexpr SectionSchema k_sections[] = {
    {"", k_root_keys},           {"source", k_endpoint_keys},           {"target", k_endpoint_keys},
    {"tables", k_tables_keys},   {"initial_copy", k_initial_copy_keys}, {"apply", k_apply_keys},
    {"control", k_control_keys}, {"cutover", k_cutover_keys},           {"log", k_log_keys},
    {"reconnect", k_reconnect_keys},
};

template <typename E> struct EnumName {
    std::string_view name;
    E value;
};

constexpr EnumName<SchemaMode> k_schema_modes[] = {{"copy", SchemaMode::copy}, {"verify", SchemaMode::verify}};
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

std::string unknown_key_hint(std::string_view parent, std::string_view key,
                             std::span<const std::string_view> siblings) {
    if (const auto near = closest(key, siblings)) {
        return " (did you mean '" + join_path(parent, *near) + "'?)";
    }
    // A known key at the wrong level, e.g. `workers:` at the top.
    std::vector<std::string> elsewhere;
    for (const SectionSchema& section : k_sections) {
        if (section.path == parent) {
            continue;
        }
        for (const std::string_view candidate : section.keys) {
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
    std::string_view host;
    std::string_view port;
    ListenAddress address;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) {
            why = "missing ']' after the IPv6 address";
            return std::nullopt;
        }
        if (close + 1 >= text.size() || text[close + 1] != ':') {
            why = "expected ':' and a port after ']'";
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        in6_addr v6{};
        if (inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) {
            why = "not a valid IPv6 address between [ and ]";
            return std::nullopt;
        }
        const bool mapped_loopback = IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
        address.loopback = IN6_IS_ADDR_LOOPBACK(&v6) || mapped_loopback;
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            why = "expected host:port";
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.empty()) {
            why = "missing host before ':' (use 0.0.0.0 to listen on every IPv4 address)";
            return std::nullopt;
        }
        if (host.find(':') != std::string_view::npos) {
            why = "an IPv6 address must be written in brackets, e.g. [::1]:8187";
            return std::nullopt;
        }
        const bool dotted_numbers = std::all_of(host.begin(), host.end(), [](char c) {
            return std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '.';
        });
        if (dotted_numbers) {
            in_addr v4{};
            if (inet_pton(AF_INET, std::string(host).c_str(), &v4) != 1) {
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
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    const bool digits_only =
        std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
    if (port.empty() || !digits_only || ec != std::errc() || end != port.data() + port.size() || value < 1 ||
        value > 65535) {
        why = "the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    return address;
}

// libpq's conninfo quoting: single quotes, with \ and ' escaped by a backslash.
std::string conninfo_value(std::string_view value) {
    const bool plain = !value.empty() && value.find_first_of(" \t\n\r\f\v'\\") == std::string_view::npos;
    if (plain) {
        return std::string(value);
    }
    std::string out = "'";
    for (const char c : value) {
        if (c == '\'' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    out += '\'';
    return out;
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

class Loader {
public:
    Loader(std::string origin, const EnvLookup& env) : origin_(std::move(origin)), env_(env) {}

    Config load(const YAML::Node& root) {
        Config config;
        const Fields fields = check_map(root, "", k_root_keys);

        if (const Entry* entry = find(fields, "name")) {
            if (auto value = read_string(*entry)) {
                check_name(*entry, *value);
                config.name = std::move(*value);
            }
        } else {
            add(position_of(root), "name", "missing required key");
        }
        read_endpoint(fields, "source", root, config.source);
        read_endpoint(fields, "target", root, config.target);
        read_tables(fields, config.tables);
        read_initial_copy(fields, config.initial_copy);
        if (const Entry* entry = find(fields, "schema")) {
            read_enum(*entry, k_schema_modes, config.schema);
        }
        read_apply(fields, config.apply);
        read_control(fields, config.control);
        read_cutover(fields, config.cutover);
        read_reconnect(fields, config.reconnect);
        read_log(fields, config.log);
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

    template <typename E, std::size_t N> void read_enum(const Entry& entry, const EnumName<E> (&names)[N], E& out) {
        std::string expected = "one of ";
        for (std::size_t i = 0; i < N; ++i) {
            expected += (i == 0 ? "" : ", ") + std::string(names[i].name);
        }
        const auto value = scalar(entry, expected);
        if (!value) {
            return;
        }
        for (const EnumName<E>& candidate : names) {
            if (candidate.name == value->text) {
                out = candidate.value;
                return;
            }
        }
        add(entry, "expected " + expected + ", got " + echo(value->text));
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

    void check_name(const Entry& entry, const std::string& name) {
        const bool valid_chars = std::all_of(name.begin(), name.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        });
        if (name.empty() || name.size() > k_max_name_length || !valid_chars) {
            add(entry,
                "must be 1 to 40 characters from [a-z0-9_] (it names the slot and publication), got " + echo(name));
        }
    }

    void read_endpoint(const Fields& root, std::string_view key, const YAML::Node& root_node, Endpoint& out) {
        const Entry* entry = find(root, key);
        if (entry == nullptr) {
            add(position_of(root_node), key, "missing required key (a map with conninfo)");
            return;
        }
        const auto fields = section(*entry, k_endpoint_keys);
        if (!fields) {
            return;
        }
        const Entry* conninfo = find(*fields, "conninfo");
        if (conninfo == nullptr) {
            add(position_of(entry->value), entry->path + ".conninfo", "missing required key");
            return;
        }
        auto value = read_string(*conninfo);
        if (!value) {
            return;
        }
        if (value->empty()) {
            add(*conninfo, "must not be empty");
            return;
        }
        char* error = nullptr;
        PQconninfoOption* options = PQconninfoParse(value->c_str(), &error);
        if (options == nullptr) {
            const std::string message = error != nullptr ? error : "out of memory";
            if (error != nullptr) {
                PQfreemem(error);
            }
            add(*conninfo, "invalid conninfo: " + sanitize_libpq_message(message) + conninfo_keyword_hint(message));
            return;
        }
        PQconninfoFree(options);
        out.conninfo = std::move(*value);
    }

    void read_tables(const Fields& root, Tables& out) {
        const Entry* entry = find(root, "tables");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_tables_keys);
        if (!fields) {
            return;
        }
        if (const Entry* include = find(*fields, "include")) {
            if (auto globs = read_table_globs(*include)) {
                out.include = std::move(*globs);
            }
        }
        if (const Entry* exclude = find(*fields, "exclude")) {
            if (auto globs = read_table_globs(*exclude)) {
                out.exclude = std::move(*globs);
            }
        }
    }

    void read_initial_copy(const Fields& root, InitialCopy& out) {
        const Entry* entry = find(root, "initial_copy");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_initial_copy_keys);
        if (!fields) {
            return;
        }
        if (const Entry* enabled = find(*fields, "enabled")) {
            if (const auto value = read_bool(*enabled)) {
                out.enabled = *value;
            }
        }
        if (const Entry* workers = find(*fields, "workers")) {
            if (const auto value = read_int(*workers, k_min_workers, k_max_workers)) {
                out.workers = *value;
            }
        }
    }

    void read_apply(const Fields& root, Apply& out) {
        const Entry* entry = find(root, "apply");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_apply_keys);
        if (!fields) {
            return;
        }
        if (const Entry* workers = find(*fields, "workers")) {
            if (const auto value = read_int(*workers, k_min_workers, k_max_workers)) {
                out.workers = *value;
            }
        }
        if (const Entry* policy = find(*fields, "on_missing_row")) {
            read_enum(*policy, k_missing_row_policies, out.on_missing_row);
        }
        if (const Entry* bytes = find(*fields, "max_queue_bytes")) {
            if (const auto value = read_uint64(*bytes, k_min_queue_bytes, "1048576 (1 MiB)")) {
                out.max_queue_bytes = *value;
            }
        }
        // Existence and permissions are the daemon's to check at start: the loader also runs
        // under `pgshift check` on another host.
        if (const Entry* dir = find(*fields, "spill_dir")) {
            if (auto value = read_string(*dir)) {
                if (!value->empty() && value->front() != '/') {
                    add(*dir, "must be an absolute path (or empty for the default: $STATE_DIRECTORY, $TMPDIR or "
                              "/var/tmp), got " +
                                  echo(*value));
                } else {
                    out.spill_dir = std::move(*value);
                }
            }
        }
    }

    void read_control(const Fields& root, Control& out) {
        const Entry* entry = find(root, "control");
        if (entry == nullptr) {
            return; // the default listen address is loopback, so no token is needed
        }
        const auto fields = section(*entry, k_control_keys);
        if (!fields) {
            return;
        }
        const Entry* token = find(*fields, "token_file");
        bool token_ok = true;
        if (token != nullptr) {
            if (auto value = read_string(*token)) {
                out.token_file = std::move(*value);
            } else {
                token_ok = false; // already reported; do not pile a second error on it
            }
        }
        const Entry* listen = find(*fields, "listen");
        if (listen == nullptr) {
            return;
        }
        auto value = read_string(*listen);
        if (!value) {
            return;
        }
        std::string why;
        const auto address = parse_listen(*value, why);
        if (!address) {
            add(*listen,
                "expected host:port (IPv4, [IPv6] or hostname; port 1-65535): " + why + ", got " + echo(*value));
            return;
        }
        out.listen = std::move(*value);
        if (!address->loopback && token_ok && out.token_file.empty()) {
            const Position pos = token != nullptr ? value_position(*token) : value_position(*listen);
            add(pos, "control.token_file",
                "required when control.listen is not a loopback address (" + echo(out.listen) +
                    "): every POST must carry the bearer token");
        }
    }

    void read_cutover(const Fields& root, Cutover& out) {
        const Entry* entry = find(root, "cutover");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_cutover_keys);
        if (!fields) {
            return;
        }
        bool fence_ok = false;
        const Entry* fence = find(*fields, "fence");
        if (fence != nullptr) {
            const std::size_t before = problems_.size();
            read_enum(*fence, k_fence_modes, out.fence);
            fence_ok = problems_.size() == before;
        }
        bool command_ok = true;
        const Entry* command = find(*fields, "fence_command");
        if (command != nullptr) {
            if (auto value = read_string(*command)) {
                out.fence_command = std::move(*value);
            } else {
                command_ok = false;
            }
        }
        if (const Entry* undo = find(*fields, "unfence_command")) {
            if (auto value = read_string(*undo)) {
                out.unfence_command = std::move(*value);
            }
        }
        if (fence_ok && command_ok && out.fence == FenceMode::command && out.fence_command.empty()) {
            const Position pos = command != nullptr ? value_position(*command) : value_position(*fence);
            add(pos, "cutover.fence_command", "required (non-empty) when cutover.fence is command");
        }
        if (const Entry* lag = find(*fields, "max_lag_seconds")) {
            if (const auto value = read_number(*lag, "a number of seconds", k_cutover_seconds_range)) {
                out.max_lag_seconds = *value;
            }
        }
        if (const Entry* timeout = find(*fields, "timeout_seconds")) {
            if (const auto value = read_number(*timeout, "a number of seconds", k_cutover_seconds_range)) {
                out.timeout_seconds = *value;
            }
        }
        if (const Entry* sync = find(*fields, "sync_sequences")) {
            if (const auto value = read_bool(*sync)) {
                out.sync_sequences = *value;
            }
        }
        if (const Entry* verify = find(*fields, "verify")) {
            read_enum(*verify, k_verify_modes, out.verify);
        }
    }

    void read_reconnect(const Fields& root, Reconnect& out) {
        const Entry* entry = find(root, "reconnect");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_reconnect_keys);
        if (!fields) {
            return;
        }
        // min and max are compared only when both were read: an invalid one is reported once.
        bool min_ok = true;
        const Entry* min = find(*fields, "min_delay_seconds");
        if (min != nullptr) {
            if (const auto value = read_number(*min, "a number of seconds", k_reconnect_delay_range)) {
                out.min_delay_seconds = *value;
            } else {
                min_ok = false;
            }
        }
        const Entry* max = find(*fields, "max_delay_seconds");
        if (max != nullptr) {
            if (const auto value = read_number(*max, "a number of seconds", k_reconnect_delay_range)) {
                if (min_ok && *value < out.min_delay_seconds) {
                    add(*max, "must not be below reconnect.min_delay_seconds");
                } else {
                    out.max_delay_seconds = *value;
                }
            }
        } else if (min_ok && min != nullptr && out.min_delay_seconds > out.max_delay_seconds) {
            add(*min, "must not be above reconnect.max_delay_seconds (" + format_number(out.max_delay_seconds) +
                          " when not set), got " + format_number(out.min_delay_seconds));
        }
        if (const Entry* factor = find(*fields, "factor")) {
            if (const auto value = read_number(*factor, "a number", k_reconnect_factor_range)) {
                out.factor = *value;
            }
        }
    }

    void read_log(const Fields& root, Log& out) {
        const Entry* entry = find(root, "log");
        if (entry == nullptr) {
            return;
        }
        const auto fields = section(*entry, k_log_keys);
        if (!fields) {
            return;
        }
        if (const Entry* level = find(*fields, "level")) {
            read_enum(*level, k_log_levels, out.level);
        }
        if (const Entry* format = find(*fields, "format")) {
            read_enum(*format, k_log_formats, out.format);
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
        out += secret ? std::string(k_redacted) : conninfo_value(option->val);
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

} // namespace pgshift::config
