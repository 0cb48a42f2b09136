// Unit tests for the configuration loader: schema, positions in messages, ${VAR}, secrets, redaction.
#include "pgshift/config/config.hpp"

#include "config_test_support.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace pgshift::config;
using namespace pgshift::config::test;
using Catch::Matchers::Contains;


// ---------------------------------------------------------------------------------------------
// Valid documents

TEST_CASE("defaults apply when optional keys are omitted", "[config]") {
    const Config config = load(k_minimal);
    CHECK(config.name == "shop");
    CHECK(config.source.conninfo == "host=old-db dbname=shop user=migrator");
    CHECK(config.target.conninfo == "postgresql://migrator@new-db:5432/shop");
    CHECK(config.tables.include.empty());
    CHECK(config.tables.exclude.empty());
    CHECK(config.initial_copy.enabled);
    CHECK(config.initial_copy.workers == 4);
    CHECK(config.schema == SchemaMode::copy);
    CHECK(config.apply.workers == 4);
    CHECK(config.apply.on_missing_row == MissingRowPolicy::error);
    CHECK(config.apply.max_queue_bytes == 268435456U);
    CHECK(config.apply.spill_dir.empty());
    CHECK(config.control.listen == "127.0.0.1:8187");
    CHECK(config.control.token_file.empty());
    CHECK(config.cutover.fence == FenceMode::read_only);
    CHECK(config.cutover.fence_command.empty());
    CHECK(config.cutover.unfence_command.empty());
    CHECK(config.cutover.max_lag_seconds == 10);
    CHECK(config.cutover.timeout_seconds == 60);
    CHECK(config.cutover.sync_sequences);
    CHECK(config.cutover.verify == VerifyMode::counts);
    CHECK(config.log.level == LogLevel::info);
    CHECK(config.log.format == LogFormat::text);
}

TEST_CASE("every key is read (round trip with non-default values)", "[config]") {
    const Config config = load("name: orders_2025\n"
                               "source:\n"
                               "  conninfo: \"host=a port=5433 dbname=app\"\n"
                               "target:\n"
                               "  conninfo: \"postgres://u@b/app\"\n"
                               "tables:\n"
                               "  include: [\"public.*\", \"sales.order_*\"]\n"
                               "  exclude:\n"
                               "    - public.tmp_*\n"
                               "initial_copy:\n"
                               "  enabled: false\n"
                               "  workers: 64\n"
                               "schema: verify\n"
                               "apply:\n"
                               "  workers: 1\n"
                               "  on_missing_row: skip\n"
                               "  max_queue_bytes: 1048576\n"
                               "  spill_dir: /var/lib/pgshift\n"
                               "control:\n"
                               "  listen: \"0.0.0.0:9000\"\n"
                               "  token_file: /run/secrets/token\n"
                               "cutover:\n"
                               "  fence: command\n"
                               "  fence_command: \"pgfence on\"\n"
                               "  unfence_command: \"pgfence off\"\n"
                               "  max_lag_seconds: 2.5\n"
                               "  timeout_seconds: 300\n"
                               "  sync_sequences: false\n"
                               "  verify: checksums\n"
                               "log:\n"
                               "  level: trace\n"
                               "  format: json\n");
    CHECK(config.name == "orders_2025");
    CHECK(config.source.conninfo == "host=a port=5433 dbname=app");
    CHECK(config.target.conninfo == "postgres://u@b/app");
    CHECK(config.tables.include == std::vector<std::string>{"public.*", "sales.order_*"});
    CHECK(config.tables.exclude == std::vector<std::string>{"public.tmp_*"});
    CHECK_FALSE(config.initial_copy.enabled);
    CHECK(config.initial_copy.workers == 64);
    CHECK(config.schema == SchemaMode::verify);
    CHECK(config.apply.workers == 1);
    CHECK(config.apply.on_missing_row == MissingRowPolicy::skip);
    CHECK(config.apply.max_queue_bytes == 1048576U);
    CHECK(config.apply.spill_dir == "/var/lib/pgshift");
    CHECK(config.control.listen == "0.0.0.0:9000");
    CHECK(config.control.token_file == "/run/secrets/token");
    CHECK(config.cutover.fence == FenceMode::command);
    CHECK(config.cutover.fence_command == "pgfence on");
    CHECK(config.cutover.unfence_command == "pgfence off");
    CHECK(config.cutover.max_lag_seconds == 2.5);
    CHECK(config.cutover.timeout_seconds == 300);
    CHECK_FALSE(config.cutover.sync_sequences);
    CHECK(config.cutover.verify == VerifyMode::checksums);
    CHECK(config.log.level == LogLevel::trace);
    CHECK(config.log.format == LogFormat::json);
    CHECK(config.slot_name() == "pgshift_orders_2025");
    CHECK(config.publication_name() == "pgshift_orders_2025");
    CHECK(config.origin_name(3) == "pgshift_orders_2025_w3");
}

TEST_CASE("every enum value is accepted", "[config]") {
    CHECK(load(k_minimal + "schema: copy\n").schema == SchemaMode::copy);
    CHECK(load(k_minimal + "cutover:\n  fence: none\n").cutover.fence == FenceMode::none);
    CHECK(load(k_minimal + "cutover:\n  fence: read_only\n").cutover.fence == FenceMode::read_only);
    CHECK(load(k_minimal + "cutover:\n  verify: none\n").cutover.verify == VerifyMode::none);
    CHECK(load(k_minimal + "cutover:\n  verify: counts\n").cutover.verify == VerifyMode::counts);
    CHECK(load(k_minimal + "apply:\n  on_missing_row: error\n").apply.on_missing_row == MissingRowPolicy::error);
    CHECK(load(k_minimal + "log:\n  level: debug\n").log.level == LogLevel::debug);
    CHECK(load(k_minimal + "log:\n  level: warn\n").log.level == LogLevel::warn);
    CHECK(load(k_minimal + "log:\n  level: error\n").log.level == LogLevel::error);
    CHECK(load(k_minimal + "log:\n  format: text\n").log.format == LogFormat::text);
}

TEST_CASE("the shipped example config is valid", "[config]") {
    const std::string path = std::string(PGSHIFT_SOURCE_DIR) + "/config/pgshift.example.yaml";
    const auto env = env_of({{"PGSHIFT_SOURCE_HOST", "old-db"}, {"PGSHIFT_TARGET_HOST", "new-db"}});
    Config config;
    try {
        config = load_from_file(path, env);
    } catch (const ConfigErrors& e) {
        FAIL(e.what());
    }
    CHECK(config.name == "shop");
    CHECK_THAT(config.source.conninfo, Contains("host=old-db"));
    CHECK_THAT(config.target.conninfo, Contains("@new-db"));
    CHECK(config.control.listen == "127.0.0.1:8187");
}

TEST_CASE("the shipped example config shows every key", "[config]") {
    // Loading proves no key is unknown; this proves none is left out.
    std::ifstream in(std::string(PGSHIFT_SOURCE_DIR) + "/config/pgshift.example.yaml");
    REQUIRE(in);
    std::set<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        lines.insert(line.substr(0, line.find(':') + 1));
    }
    // The key lines of SPEC section 2, in its order.
    const std::string spec_keys = R"(name:
source:
  conninfo:
target:
tables:
  include:
  exclude:
initial_copy:
  enabled:
  workers:
schema:
apply:
  on_missing_row:
  max_queue_bytes:
control:
  listen:
  token_file:
cutover:
  fence:
  fence_command:
  unfence_command:
  max_lag_seconds:
  timeout_seconds:
  sync_sequences:
  verify:
log:
  level:
  format:)";
    std::vector<std::string> keys;
    std::istringstream key_lines(spec_keys);
    for (std::string key; std::getline(key_lines, key);) {
        keys.push_back(key);
    }
    REQUIRE(keys.size() == 28);
    for (const std::string& key : keys) {
        INFO("key: " << key);
        CHECK(lines.count(key) == 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Document-level problems

TEST_CASE("an empty document is an error", "[config]") {
    CHECK(starts_with(problem_of(""), "t.yaml:1:1: (root): the document is empty"));
    CHECK(starts_with(problem_of("# only a comment\n"), "t.yaml:1:1: (root): the document is empty"));
    CHECK(starts_with(problem_of("---\n"), "t.yaml:1:1: (root): the document is empty"));
}

TEST_CASE("a root that is not a map is an error", "[config]") {
    CHECK(problem_of("- a\n- b\n") == "t.yaml:1:1: (root): expected a map at the top level, got a list");
    CHECK(problem_of("just text\n") == "t.yaml:1:1: (root): expected a map at the top level, got a scalar");
}

TEST_CASE("a second YAML document is an error", "[config]") {
    CHECK(problem_of(k_minimal + "---\nname: other\n") ==
          "t.yaml:7:1: (root): expected a single YAML document, found 2");
}

TEST_CASE("YAML syntax errors carry line:column", "[config]") {
    // Line 6 opens a flow sequence that never closes; yaml-cpp reports it on the next line.
    const std::string problem = problem_of(k_minimal + "tables:\n  include: [public.a\n");
    CHECK_THAT(problem, Contains("t.yaml:8:1: (root): YAML syntax error: end of sequence flow not found"));
    CHECK(problem_of("name: a: b\n") == "t.yaml:1:8: (root): YAML syntax error: illegal map value");
}

TEST_CASE("an unreadable file is a ConfigErrors naming the path", "[config]") {
    try {
        (void)load_from_file("/nonexistent/pgshift.yaml", no_env());
        FAIL("expected ConfigErrors");
    } catch (const ConfigErrors& e) {
        REQUIRE(e.problems().size() == 1);
        CHECK_THAT(e.problems()[0], Contains("/nonexistent/pgshift.yaml:1:1: (root): cannot read"));
    }
}

// ---------------------------------------------------------------------------------------------
// Keys: unknown, duplicate, missing

TEST_CASE("unknown keys are errors with a suggestion", "[config]") {
    SECTION("a typo gets the closest key") {
        CHECK(problem_of(k_minimal + "apply:\n  worker: 2\n") ==
              "t.yaml:7:3: apply.worker: unknown key (did you mean 'apply.workers'?)");
        // The misspelt key also leaves the required one missing; both are reported.
        const auto problems = problems_of("name: shop\nsource:\n  conninf: x\ntarget:\n  conninfo: host=b\n");
        CHECK(problems ==
              std::vector<std::string>{"t.yaml:3:3: source.conninf: unknown key (did you mean 'source.conninfo'?)",
                                       "t.yaml:3:3: source.conninfo: missing required key"});
        CHECK(problem_of(k_minimal + "cutovr:\n  fence: none\n") ==
              "t.yaml:6:1: cutovr: unknown key (did you mean 'cutover'?)");
    }
    SECTION("a key at the wrong level names where it belongs") {
        CHECK(problem_of(k_minimal + "workers: 4\n") ==
              "t.yaml:6:1: workers: unknown key (did you mean 'initial_copy.workers' or 'apply.workers'?)");
    }
    SECTION("no plausible match lists the allowed keys") {
        CHECK(problem_of(k_minimal + "log:\n  colour: true\n") ==
              "t.yaml:7:3: log.colour: unknown key (expected one of: level, format)");
    }
}

TEST_CASE("duplicate keys are errors pointing at the second occurrence", "[config]") {
    CHECK(problem_of(k_minimal + "name: other\n") == "t.yaml:6:1: name: duplicate key (first defined at line 1:1)");
    CHECK(problem_of(k_minimal + "apply:\n  workers: 2\n  workers: 3\n") ==
          "t.yaml:8:3: apply.workers: duplicate key (first defined at line 7:3)");
    // The first value wins for the rest of the validation: the second (invalid) one is not read.
    CHECK(problem_of(k_minimal + "log:\n  level: info\n  level: shout\n") ==
          "t.yaml:8:3: log.level: duplicate key (first defined at line 7:3)");
}

TEST_CASE("a non-string key is an error", "[config]") {
    CHECK(problem_of(k_minimal + "apply:\n  ? [a, b]\n  : 1\n") ==
          "t.yaml:7:5: apply: keys must be strings, got a list");
}

TEST_CASE("missing required keys are reported at their parent map", "[config]") {
    SECTION("name") {
        CHECK(problem_of("source:\n  conninfo: host=a\ntarget:\n  conninfo: host=b\n") ==
              "t.yaml:1:1: name: missing required key");
    }
    SECTION("source.conninfo") {
        CHECK(problem_of("name: shop\nsource: {}\ntarget:\n  conninfo: host=b\n") ==
              "t.yaml:2:9: source.conninfo: missing required key");
    }
    SECTION("target.conninfo inside a block map") {
        const auto problems = problems_of("name: shop\nsource:\n  conninfo: host=a\ntarget:\n  conninf: host=b\n");
        REQUIRE(problems.size() == 2);
        CHECK(problems[1] == "t.yaml:5:3: target.conninfo: missing required key");
    }
    SECTION("a whole section") {
        CHECK(problem_of("name: shop\nsource:\n  conninfo: host=a\n") ==
              "t.yaml:1:1: target: missing required key (a map with conninfo)");
    }
    SECTION("an empty conninfo") {
        CHECK(problem_of("name: shop\nsource:\n  conninfo: \"\"\ntarget:\n  conninfo: host=b\n") ==
              "t.yaml:3:13: source.conninfo: must not be empty");
    }
}

// ---------------------------------------------------------------------------------------------
// Types

TEST_CASE("wrong types are errors", "[config]") {
    SECTION("a string where an integer is expected") {
        CHECK(problem_of(k_minimal + "apply:\n  workers: four\n") ==
              "t.yaml:7:12: apply.workers: expected an integer, got 'four'");
        CHECK(problem_of(k_minimal + "apply:\n  workers: 2.5\n") ==
              "t.yaml:7:12: apply.workers: expected an integer, got '2.5'");
        CHECK(problem_of(k_minimal + "apply:\n  max_queue_bytes: 1MiB\n") ==
              "t.yaml:7:20: apply.max_queue_bytes: expected an integer, got '1MiB'");
    }
    SECTION("a quoted number is a string") {
        CHECK(problem_of(k_minimal + "apply:\n  workers: \"4\"\n") ==
              "t.yaml:7:12: apply.workers: expected an integer, got the quoted string '4'");
        CHECK(problem_of(k_minimal + "cutover:\n  timeout_seconds: '60'\n") ==
              "t.yaml:7:20: cutover.timeout_seconds: expected a number of seconds, got the quoted string '60'");
    }
    SECTION("a map where a list is expected") {
        CHECK(problem_of(k_minimal + "tables:\n  include:\n    public: all\n") ==
              "t.yaml:8:5: tables.include: expected a list of schema.table globs, got a map");
    }
    SECTION("a scalar where a list is expected") {
        CHECK(problem_of(k_minimal + "tables:\n  exclude: public.tmp\n") ==
              "t.yaml:7:12: tables.exclude: expected a list of schema.table globs, got a scalar");
    }
    SECTION("a list item that is not a string") {
        CHECK(problem_of(k_minimal + "tables:\n  include: [public.a, [x]]\n") ==
              "t.yaml:7:23: tables.include[1]: expected a string, got a list");
    }
    SECTION("a list item that is not schema.table") {
        CHECK(problem_of(k_minimal + "tables:\n  include: [orders]\n") ==
              "t.yaml:7:13: tables.include[0]: expected a schema.table glob such as 'public.*', got 'orders'");
    }
    SECTION("a scalar where a map is expected") {
        CHECK(problem_of(k_minimal + "apply: 4\n") == "t.yaml:6:8: apply: expected a map, got a scalar");
        CHECK(problem_of(k_minimal + "cutover: [a]\n") == "t.yaml:6:10: cutover: expected a map, got a list");
    }
    SECTION("a map where a string is expected") {
        CHECK(problem_of(k_minimal + "control:\n  listen: {host: a}\n") ==
              "t.yaml:7:11: control.listen: expected a string, got a map");
    }
    SECTION("null values point at their key") {
        CHECK(problem_of(k_minimal + "apply:\n  workers:\nlog:\n  level: info\n") ==
              "t.yaml:7:3: apply.workers: expected an integer, got null");
        CHECK(problem_of(k_minimal + "tables:\n") == "t.yaml:6:1: tables: expected a map, got null");
        CHECK(problem_of(k_minimal + "control:\n  token_file: ~\n") ==
              "t.yaml:7:3: control.token_file: expected a string, got null");
    }
    SECTION("booleans are only true or false") {
        CHECK(problem_of(k_minimal + "initial_copy:\n  enabled: yes\n") ==
              "t.yaml:7:12: initial_copy.enabled: expected true or false, got 'yes'");
        CHECK(problem_of(k_minimal + "cutover:\n  sync_sequences: no\n") ==
              "t.yaml:7:19: cutover.sync_sequences: expected true or false, got 'no'");
        CHECK(problem_of(k_minimal + "cutover:\n  sync_sequences: on\n") ==
              "t.yaml:7:19: cutover.sync_sequences: expected true or false, got 'on'");
        CHECK(problem_of(k_minimal + "initial_copy:\n  enabled: \"true\"\n") ==
              "t.yaml:7:12: initial_copy.enabled: expected true or false, got the quoted string 'true'");
    }
}

// ---------------------------------------------------------------------------------------------
// Values

TEST_CASE("out-of-range numbers are errors", "[config]") {
    CHECK(problem_of(k_minimal + "apply:\n  workers: 0\n") ==
          "t.yaml:7:12: apply.workers: must be between 1 and 64, got 0");
    CHECK(problem_of(k_minimal + "apply:\n  workers: 65\n") ==
          "t.yaml:7:12: apply.workers: must be between 1 and 64, got 65");
    CHECK(problem_of(k_minimal + "apply:\n  workers: 99999999999999999999\n") ==
          "t.yaml:7:12: apply.workers: must be between 1 and 64, got 99999999999999999999");
    CHECK(problem_of(k_minimal + "initial_copy:\n  workers: -1\n") ==
          "t.yaml:7:12: initial_copy.workers: must be between 1 and 64, got -1");
    CHECK(problem_of(k_minimal + "apply:\n  max_queue_bytes: 1048575\n") ==
          "t.yaml:7:20: apply.max_queue_bytes: must be at least 1048576 (1 MiB), got 1048575");
    CHECK(problem_of(k_minimal + "apply:\n  max_queue_bytes: -5\n") ==
          "t.yaml:7:20: apply.max_queue_bytes: must be at least 1048576 (1 MiB), got -5");
    CHECK(problem_of(k_minimal + "apply:\n  max_queue_bytes: 99999999999999999999999\n") ==
          "t.yaml:7:20: apply.max_queue_bytes: too large, got 99999999999999999999999");
    CHECK(problem_of(k_minimal + "cutover:\n  max_lag_seconds: 0\n") ==
          "t.yaml:7:20: cutover.max_lag_seconds: must be greater than 0 and at most 86400 seconds, got 0");
    CHECK(problem_of(k_minimal + "cutover:\n  timeout_seconds: -3\n") ==
          "t.yaml:7:20: cutover.timeout_seconds: must be greater than 0 and at most 86400 seconds, got -3");
    CHECK(problem_of(k_minimal + "cutover:\n  timeout_seconds: inf\n") ==
          "t.yaml:7:20: cutover.timeout_seconds: expected a number of seconds, got 'inf'");
    CHECK(load(k_minimal + "apply:\n  workers: 64\n  max_queue_bytes: 18446744073709551615\n").apply.max_queue_bytes ==
          18446744073709551615U);
}

TEST_CASE("name must match [a-z0-9_]{1,40}", "[config]") {
    const std::string rest = "source:\n  conninfo: host=a\ntarget:\n  conninfo: host=b\n";
    CHECK(
        problem_of("name: Shop\n" + rest) ==
        "t.yaml:1:7: name: must be 1 to 40 characters from [a-z0-9_] (it names the slot and publication), got 'Shop'");
    CHECK_THAT(problem_of("name: my-shop\n" + rest), Contains("t.yaml:1:7: name: must be 1 to 40 characters"));
    CHECK_THAT(problem_of("name: \"\"\n" + rest), Contains("t.yaml:1:7: name: must be 1 to 40 characters"));
    CHECK_THAT(problem_of("name: " + std::string(41, 'a') + "\n" + rest),
               Contains("t.yaml:1:7: name: must be 1 to 40"));
    CHECK(load("name: " + std::string(40, 'a') + "\n" + rest).name == std::string(40, 'a'));
    CHECK(load("name: 0_9\n" + rest).name == "0_9");
}

TEST_CASE("enums accept only the listed values", "[config]") {
    CHECK(problem_of(k_minimal + "schema: create\n") ==
          "t.yaml:6:9: schema: expected one of copy, verify, got 'create'");
    CHECK(problem_of(k_minimal + "apply:\n  on_missing_row: ignore\n") ==
          "t.yaml:7:19: apply.on_missing_row: expected one of error, skip, got 'ignore'");
    CHECK(problem_of(k_minimal + "cutover:\n  fence: readonly\n") ==
          "t.yaml:7:10: cutover.fence: expected one of read_only, command, none, got 'readonly'");
    CHECK(problem_of(k_minimal + "cutover:\n  verify: rows\n") ==
          "t.yaml:7:11: cutover.verify: expected one of none, counts, checksums, got 'rows'");
    CHECK(problem_of(k_minimal + "log:\n  level: INFO\n") ==
          "t.yaml:7:10: log.level: expected one of trace, debug, info, warn, error, got 'INFO'");
    CHECK(problem_of(k_minimal + "log:\n  format: xml\n") ==
          "t.yaml:7:11: log.format: expected one of text, json, got 'xml'");
}

TEST_CASE("control.listen must be host:port", "[config]") {
    SECTION("valid forms") {
        CHECK(load(k_minimal + "control:\n  listen: \"127.0.0.1:1\"\n").control.listen == "127.0.0.1:1");
        CHECK(load(k_minimal + "control:\n  listen: \"[::1]:8187\"\n").control.listen == "[::1]:8187");
        CHECK(load(k_minimal + "control:\n  listen: \"localhost:65535\"\n").control.listen == "localhost:65535");
        CHECK(load(k_minimal + "control:\n  listen: \"ctl.example.com:80\"\n  token_file: /t\n").control.listen ==
              "ctl.example.com:80");
        CHECK(load(k_minimal + "control:\n  listen: \"[2001:db8::1]:80\"\n  token_file: /t\n").control.listen ==
              "[2001:db8::1]:80");
    }
    SECTION("invalid forms") {
        const auto listen_problem = [](const std::string& value) {
            return problem_of(k_minimal + "control:\n  listen: \"" + value + "\"\n");
        };
        const std::string prefix =
            "t.yaml:7:11: control.listen: expected host:port (IPv4, [IPv6] or hostname; port 1-65535): ";
        CHECK(listen_problem("127.0.0.1") == prefix + "expected host:port, got '127.0.0.1'");
        CHECK(listen_problem("127.0.0.1:0") == prefix + "the port must be a number from 1 to 65535, got '127.0.0.1:0'");
        CHECK(listen_problem("127.0.0.1:65536") ==
              prefix + "the port must be a number from 1 to 65535, got '127.0.0.1:65536'");
        CHECK(listen_problem("127.0.0.1:http") ==
              prefix + "the port must be a number from 1 to 65535, got '127.0.0.1:http'");
        CHECK(listen_problem("127.0.0.1:") == prefix + "the port must be a number from 1 to 65535, got '127.0.0.1:'");
        CHECK(listen_problem("999.0.0.1:80") == prefix + "not a valid IPv4 address, got '999.0.0.1:80'");
        CHECK(listen_problem("::1:80") ==
              prefix + "an IPv6 address must be written in brackets, e.g. [::1]:8187, got '::1:80'");
        CHECK(listen_problem("[::1:80") == prefix + "missing ']' after the IPv6 address, got '[::1:80'");
        CHECK(listen_problem("[::1]80") == prefix + "expected ':' and a port after ']', got '[::1]80'");
        CHECK(listen_problem("[zz::1]:80") == prefix + "not a valid IPv6 address between [ and ], got '[zz::1]:80'");
        CHECK(listen_problem("bad_host:80") == prefix + "not a valid IPv4 address or hostname, got 'bad_host:80'");
        CHECK_THAT(listen_problem(":80"), Contains(prefix + "missing host before ':'"));
    }
}

TEST_CASE("a non-loopback listen address needs a token file", "[config]") {
    SECTION("without token_file: reported at listen") {
        CHECK(problem_of(k_minimal + "control:\n  listen: \"0.0.0.0:8187\"\n") ==
              "t.yaml:7:11: control.token_file: required when control.listen is not a loopback address "
              "('0.0.0.0:8187'): every POST must carry the bearer token");
    }
    SECTION("with an empty token_file: reported at token_file") {
        CHECK_THAT(problem_of(k_minimal + "control:\n  listen: \"[::]:8187\"\n  token_file: \"\"\n"),
                   Contains("t.yaml:8:15: control.token_file: required when control.listen is not a loopback address"));
    }
    SECTION("a hostname other than localhost is not loopback") {
        CHECK_THAT(problem_of(k_minimal + "control:\n  listen: \"db-host:8187\"\n"),
                   Contains("control.token_file: required"));
    }
    SECTION("loopback addresses need no token") {
        CHECK_NOTHROW(load(k_minimal + "control:\n  listen: \"127.5.6.7:8187\"\n"));
        CHECK_NOTHROW(load(k_minimal + "control:\n  listen: \"[::1]:8187\"\n"));
        CHECK_NOTHROW(load(k_minimal + "control:\n  listen: \"LOCALHOST:8187\"\n"));
        CHECK_NOTHROW(load(k_minimal + "control:\n  listen: \"[::ffff:127.0.0.1]:8187\"\n"));
    }
    SECTION("a token file makes any address acceptable") {
        CHECK(load(k_minimal + "control:\n  listen: \"0.0.0.0:8187\"\n  token_file: /etc/pgshift/token\n")
                  .control.token_file == "/etc/pgshift/token");
    }
}

TEST_CASE("fence: command requires fence_command", "[config]") {
    CHECK(problem_of(k_minimal + "cutover:\n  fence: command\n") ==
          "t.yaml:7:10: cutover.fence_command: required (non-empty) when cutover.fence is command");
    CHECK(problem_of(k_minimal + "cutover:\n  fence: command\n  fence_command: \"\"\n") ==
          "t.yaml:8:18: cutover.fence_command: required (non-empty) when cutover.fence is command");
    CHECK(
        load(k_minimal + "cutover:\n  fence: command\n  fence_command: /usr/local/bin/fence\n").cutover.fence_command ==
        "/usr/local/bin/fence");
    // fence_command without fence: command is allowed (kept for a later switch).
    CHECK_NOTHROW(load(k_minimal + "cutover:\n  fence_command: /usr/local/bin/fence\n"));
}

TEST_CASE("reconnect backoff is configurable and checked", "[config]") {
    const auto defaults = load(k_minimal);
    CHECK(defaults.reconnect.min_delay_seconds == 0.5);
    CHECK(defaults.reconnect.max_delay_seconds == 30);
    CHECK(defaults.reconnect.factor == 2);
    const auto set = load(k_minimal + "reconnect:\n  min_delay_seconds: 1\n  max_delay_seconds: 5\n  factor: 1.5\n");
    CHECK(set.reconnect.min_delay_seconds == 1);
    CHECK(set.reconnect.max_delay_seconds == 5);
    CHECK(set.reconnect.factor == 1.5);
    CHECK(problem_of(k_minimal + "reconnect:\n  min_delay_seconds: 10\n  max_delay_seconds: 5\n") ==
          "t.yaml:8:22: reconnect.max_delay_seconds: must not be below reconnect.min_delay_seconds");
    CHECK(problem_of(k_minimal + "reconnect:\n  factor: 0.5\n") ==
          "t.yaml:7:11: reconnect.factor: must be between 1 and 10, got 0.5");
    CHECK(problem_of(k_minimal + "reconnect:\n  min_delay_seconds: 0\n") ==
          "t.yaml:7:22: reconnect.min_delay_seconds: must be between 0.1 and 3600 seconds, got 0");
}

TEST_CASE("invalid conninfo is reported with libpq's reason", "[config]") {
    const auto with_source = [](const std::string& conninfo) {
        return problem_of("name: shop\nsource:\n  conninfo: \"" + conninfo + "\"\ntarget:\n  conninfo: host=b\n");
    };
    CHECK(with_source("host=a dbname") ==
          "t.yaml:3:13: source.conninfo: invalid conninfo: missing \"=\" after \"...\" in connection info string");
    CHECK(with_source("host=a colour=red") ==
          "t.yaml:3:13: source.conninfo: invalid conninfo: invalid connection option \"...\"");
    CHECK(with_source("host=a passwrd=x") == "t.yaml:3:13: source.conninfo: invalid conninfo: invalid connection "
                                             "option \"...\" (did you mean \"password\"?)");
    CHECK(with_source("postgresql://u@[::1/db") ==
          "t.yaml:3:13: source.conninfo: invalid conninfo: end of string reached when looking for matching \"]\" in "
          "IPv6 host address in URI: \"...\"");
    CHECK_THAT(problem_of("name: shop\nsource:\n  conninfo: host=a\ntarget:\n  conninfo: \"postgresql://h/db?x\"\n"),
               Contains("t.yaml:5:13: target.conninfo: invalid conninfo: "));
}

TEST_CASE("a password never appears in an error message", "[config][secrets]") {
    const std::string secret = "hunter2";
    const std::vector<std::string> bad_conninfos = {
        "host=a password=hunter2 dbname",          // missing "=" after the last word
        "host=a password='hunter2",                // unterminated quote
        "host=a password=hun ter2=x",              // a space splits the password into a bogus keyword
        "host=a dbname=x hunter2",                 // a stray word that happens to be the password
        "postgresql://u:hunter2@[::1/db",          // bad IPv6 host; libpq quotes the whole URI
        "postgresql://u:hunter2@h/db?hunter2",     // bad query parameter
        "postgresql://u:hunter2@h/db?sslmode=%zz", // bad percent-encoding
        "postgresql://u:%hunter2@h/db",            // bad percent-encoding inside the password
    };
    for (const std::string& conninfo : bad_conninfos) {
        const std::string yaml =
            "name: shop\nsource:\n  conninfo: \"" + conninfo + "\"\ntarget:\n  conninfo: \"" + conninfo + "\"\n";
        const auto problems = problems_of(yaml);
        CHECK(problems.size() == 2);
        for (const std::string& problem : problems) {
            INFO("conninfo: " << conninfo);
            CHECK_THAT(problem, !Contains(secret));
            CHECK_THAT(problem, Contains("conninfo: invalid conninfo: "));
        }
    }
    SECTION("an expanded password in an invalid conninfo is not echoed either") {
        const auto problems = problems_of(
            "name: shop\nsource:\n  conninfo: \"host=a password=${PW} junk\"\ntarget:\n  conninfo: host=b\n",
            env_of({{"PW", secret}}));
        REQUIRE(problems.size() == 1);
        CHECK_THAT(problems[0], !Contains(secret));
    }
    SECTION("type and expansion errors do not echo the conninfo") {
        const auto problems = problems_of("name: shop\nsource:\n  conninfo: {password: hunter2}\ntarget:\n"
                                          "  conninfo: \"password=hunter2 host=${NOPE}\"\n");
        REQUIRE(problems.size() == 2);
        for (const std::string& problem : problems) {
            CHECK_THAT(problem, !Contains(secret));
        }
        CHECK(problems[0] == "t.yaml:3:13: source.conninfo: expected a string, got a map");
        CHECK_THAT(problems[1], Contains("t.yaml:5:13: target.conninfo: environment variable NOPE is not set"));
    }
}

// ---------------------------------------------------------------------------------------------
// All at once

TEST_CASE("several errors are reported at once, in document order", "[config]") {
    const std::string yaml = "name: Bad-Name\n"           // 1: invalid name
                             "source:\n"                  // 2
                             "  conninfo: \"host=a x\"\n" // 3: invalid conninfo
                             "target: {}\n"               // 4: missing target.conninfo
                             "apply:\n"                   // 5
                             "  workers: 0\n"             // 6: out of range
                             "  workers: 2\n"             // 7: duplicate
                             "  on_missing_row: maybe\n"  // 8: bad enum
                             "bogus: 1\n"                 // 9: unknown key
                             "cutover:\n"                 // 10
                             "  max_lag_seconds: soon\n"  // 11: wrong type
                             "  fence: command\n"         // 12: fence_command missing
                             "log:\n"                     // 13
                             "  level: ${LOG_LEVEL}\n";   // 14: unset variable
    try {
        (void)load(yaml);
        FAIL("expected ConfigErrors");
    } catch (const ConfigErrors& e) {
        const auto& p = e.problems();
        INFO(e.what());
        REQUIRE(p.size() == 10);
        CHECK(starts_with(p[0], "t.yaml:1:7: name: "));
        CHECK(starts_with(p[1], "t.yaml:3:13: source.conninfo: invalid conninfo: "));
        CHECK(starts_with(p[2], "t.yaml:4:9: target.conninfo: missing required key"));
        CHECK(starts_with(p[3], "t.yaml:6:12: apply.workers: must be between 1 and 64"));
        CHECK(starts_with(p[4], "t.yaml:7:3: apply.workers: duplicate key"));
        CHECK(starts_with(p[5], "t.yaml:8:19: apply.on_missing_row: expected one of error, skip"));
        CHECK(starts_with(p[6], "t.yaml:9:1: bogus: unknown key"));
        CHECK(starts_with(p[7], "t.yaml:11:20: cutover.max_lag_seconds: expected a number of seconds"));
        CHECK(starts_with(p[8], "t.yaml:12:10: cutover.fence_command: required"));
        CHECK(starts_with(p[9], "t.yaml:14:10: log.level: environment variable LOG_LEVEL is not set"));
        // what() carries every problem, one per line.
        const std::string what = e.what();
        CHECK(std::count(what.begin(), what.end(), '\n') == 9);
        // ConfigErrors is a ConfigError (exit code 78 policy).
        CHECK(dynamic_cast<const pgshift::ConfigError*>(&e) != nullptr);
    }
}

// ---------------------------------------------------------------------------------------------
// ${VAR} expansion

TEST_CASE("${VAR} is expanded from the environment", "[config][env]") {
    const auto env = env_of({{"SRC_HOST", "old-db"}, {"WORKERS", "8"}, {"LEVEL", "debug"}, {"EMPTY", ""}});
    const Config config = load("name: shop\n"
                               "source:\n"
                               "  conninfo: \"host=${SRC_HOST} dbname=shop\"\n"
                               "target:\n"
                               "  conninfo: \"host=${DST_HOST:-new-db} port=${PORT:-5432}\"\n"
                               "apply:\n"
                               "  workers: ${WORKERS}\n"
                               "log:\n"
                               "  level: ${LEVEL}\n"
                               "control:\n"
                               "  token_file: \"${EMPTY}\"\n"
                               "cutover:\n"
                               "  fence_command: \"echo ${EMPTY:-fallback}\"\n",
                               env);
    CHECK(config.source.conninfo == "host=old-db dbname=shop");
    CHECK(config.target.conninfo == "host=new-db port=5432");
    CHECK(config.apply.workers == 8);
    CHECK(config.log.level == LogLevel::debug);
    CHECK(config.control.token_file.empty());
    // As in the shell, :- also replaces a variable that is set but empty.
    CHECK(config.cutover.fence_command == "echo fallback");
}

TEST_CASE("a set variable wins over its default", "[config][env]") {
    const auto config =
        load(k_minimal + "cutover:\n  fence_command: \"${CMD:-default-cmd}\"\n", env_of({{"CMD", "real"}}));
    CHECK(config.cutover.fence_command == "real");
}

TEST_CASE("$$ is a literal $ and a lone $ is kept", "[config][env]") {
    const auto config = load(k_minimal + "cutover:\n  fence_command: \"echo $$HOME $${X} 5$ a$b\"\n");
    CHECK(config.cutover.fence_command == "echo $HOME ${X} 5$ a$b");
}

TEST_CASE("expanded values are not parsed as YAML", "[config][env]") {
    const auto config = load(k_minimal + "cutover:\n  fence_command: ${CMD}\n", env_of({{"CMD", "a: [b, {c}]\n# d"}}));
    CHECK(config.cutover.fence_command == "a: [b, {c}]\n# d");
}

TEST_CASE("an expanded value is validated like a literal one", "[config][env]") {
    CHECK(problem_of(k_minimal + "apply:\n  workers: ${W}\n", env_of({{"W", "100"}})) ==
          "t.yaml:7:12: apply.workers: must be between 1 and 64, got 100");
}

TEST_CASE("an unset variable without a default is an error naming it and the key", "[config][env]") {
    CHECK(problem_of(k_minimal + "control:\n  token_file: \"${TOKEN_PATH}\"\n") ==
          "t.yaml:7:15: control.token_file: environment variable TOKEN_PATH is not set (use "
          "${TOKEN_PATH:-default} for a default)");
    // Each unset variable of a value is reported.
    const auto problems = problems_of(k_minimal + "cutover:\n  fence_command: \"${A} ${B}\"\n");
    REQUIRE(problems.size() == 2);
    CHECK_THAT(problems[0], Contains("cutover.fence_command: environment variable A is not set"));
    CHECK_THAT(problems[1], Contains("cutover.fence_command: environment variable B is not set"));
}

TEST_CASE("a malformed ${ is an error", "[config][env]") {
    CHECK(problem_of(k_minimal + "cutover:\n  fence_command: \"run ${CMD\"\n") ==
          "t.yaml:7:18: cutover.fence_command: unterminated ${ (write $$ for a literal $)");
    CHECK_THAT(problem_of(k_minimal + "cutover:\n  fence_command: \"${}\"\n"),
               Contains("t.yaml:7:18: cutover.fence_command: malformed ${...}"));
    CHECK_THAT(problem_of(k_minimal + "cutover:\n  fence_command: \"${1X}\"\n"),
               Contains("t.yaml:7:18: cutover.fence_command: malformed ${...}"));
    CHECK_THAT(problem_of(k_minimal + "cutover:\n  fence_command: \"${X:default}\"\n"),
               Contains("t.yaml:7:18: cutover.fence_command: malformed ${...}"));
    CHECK_THAT(problem_of(k_minimal + "cutover:\n  fence_command: \"${X:-${Y}}\"\n"),
               Contains("t.yaml:7:18: cutover.fence_command: nested ${...} inside the default of ${X:-...}"));
}

TEST_CASE("keys are not expanded", "[config][env]") {
    CHECK_THAT(problem_of(k_minimal + "${KEY}: 1\n", env_of({{"KEY", "schema"}})),
               Contains("t.yaml:6:1: ${KEY}: unknown key"));
}

TEST_CASE("process_env reads the process environment", "[config][env]") {
    REQUIRE(::setenv("PGSHIFT_TEST_CONFIG_VAR", "value-1", 1) == 0);
    ::unsetenv("PGSHIFT_TEST_CONFIG_UNSET");
    const EnvLookup env = process_env();
    CHECK(env("PGSHIFT_TEST_CONFIG_VAR") == std::optional<std::string>("value-1"));
    CHECK_FALSE(env("PGSHIFT_TEST_CONFIG_UNSET").has_value());
}

// ---------------------------------------------------------------------------------------------
// redact_conninfo

TEST_CASE("redact_conninfo hides the password of a key=value conninfo", "[config][secrets]") {
    CHECK(redact_conninfo("host=old-db port=5432 dbname=shop user=migrator password=hunter2") ==
          "user=migrator password=******** dbname=shop host=old-db port=5432");
    CHECK(redact_conninfo("host=a password='with space\\'s'") == "password=******** host=a");
    CHECK(redact_conninfo("host=a sslpassword=keypass") == "host=a sslpassword=********");
}

TEST_CASE("redact_conninfo hides the password of a URI", "[config][secrets]") {
    const std::string redacted = redact_conninfo("postgresql://migrator:hunter2@new-db:5432/shop?sslmode=require");
    CHECK(redacted == "user=migrator password=******** dbname=shop host=new-db port=5432 sslmode=require");
    CHECK_THAT(redact_conninfo("postgres://u:p%40ss@h1,h2/db"), !Contains("p@ss") && Contains("host=h1,h2"));
}

TEST_CASE("redact_conninfo keeps values quoted as libpq expects", "[config][secrets]") {
    CHECK(redact_conninfo("host=a application_name='my app' options='-c x=\\'y\\''") ==
          "host=a options='-c x=\\'y\\'' application_name='my app'");
    CHECK(redact_conninfo("host=a dbname=''") == "dbname='' host=a");
}

TEST_CASE("redact_conninfo without a password changes nothing but the order", "[config][secrets]") {
    CHECK(redact_conninfo("dbname=shop host=a") == "dbname=shop host=a");
    CHECK(redact_conninfo("") == "");
}

TEST_CASE("redact_conninfo of an unparsable conninfo hides everything", "[config][secrets]") {
    CHECK(redact_conninfo("host=a password=hunter2 junk") == "<unparsable conninfo>");
    CHECK(redact_conninfo("postgresql://u:hunter2@[::1/db") == "<unparsable conninfo>");
}

// ---------------------------------------------------------------------------------------------
// Issue 7: findings from an operator's trial

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "pgshift-config-test-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    [[nodiscard]] std::string file(const std::string& name, const std::string& content) const {
        const std::string path = (path_ / name).string();
        std::ofstream out(path, std::ios::binary);
        out << content;
        REQUIRE(out.good());
        return path;
    }
    [[nodiscard]] std::string path(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

// The message of the ConfigError read_token_file throws; any other exception fails the test.
std::string token_error(const std::string& path) {
    try {
        const std::string token = read_token_file(path);
        FAIL("expected ConfigError, got a token of " << token.size() << " bytes");
    } catch (const ConfigErrors&) {
        FAIL("read_token_file threw ConfigErrors, expected a plain ConfigError");
    } catch (const pgshift::ConfigError& e) {
        return e.what();
    }
    return {};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `count` distinct unknown top-level keys after the minimal document (they start at line 6).
std::string with_unknown_keys(int count) {
    std::string yaml = k_minimal;
    for (int i = 0; i < count; ++i) {
        yaml += "unknown_key_" + std::to_string(i) + ": 1\n";
    }
    return yaml;
}

} // namespace

TEST_CASE("issue 7: reconnect delays below 0.1 s or a factor above 10 are refused", "[config][issue7]") {
    SECTION("the trial's spinning backoff") {
        CHECK(problems_of(k_minimal + "reconnect:\n  min_delay_seconds: 0.0005\n  max_delay_seconds: 0.0005\n"
                                      "  factor: 1\n") ==
              std::vector<std::string>{
                  "t.yaml:7:22: reconnect.min_delay_seconds: must be between 0.1 and 3600 seconds, got 0.0005",
                  "t.yaml:8:22: reconnect.max_delay_seconds: must be between 0.1 and 3600 seconds, got 0.0005"});
    }
    SECTION("the trial's overflowing factor") {
        CHECK(problem_of(k_minimal + "reconnect:\n  factor: 1e300\n") ==
              "t.yaml:7:11: reconnect.factor: must be between 1 and 10, got 1e300");
        CHECK(problem_of(k_minimal + "reconnect:\n  factor: 10.5\n") ==
              "t.yaml:7:11: reconnect.factor: must be between 1 and 10, got 10.5");
    }
    SECTION("upper bounds of the delays") {
        CHECK(problem_of(k_minimal + "reconnect:\n  min_delay_seconds: 3601\n") ==
              "t.yaml:7:22: reconnect.min_delay_seconds: must be between 0.1 and 3600 seconds, got 3601");
        CHECK(problem_of(k_minimal + "reconnect:\n  max_delay_seconds: 86400\n") ==
              "t.yaml:7:22: reconnect.max_delay_seconds: must be between 0.1 and 3600 seconds, got 86400");
    }
    SECTION("an invalid min is not compared with max a second time") {
        CHECK(problem_of(k_minimal + "reconnect:\n  min_delay_seconds: 0.01\n  max_delay_seconds: 0.3\n") ==
              "t.yaml:7:22: reconnect.min_delay_seconds: must be between 0.1 and 3600 seconds, got 0.01");
    }
    SECTION("a min above the default max needs max set too") {
        CHECK(problem_of(k_minimal + "reconnect:\n  min_delay_seconds: 60\n") ==
              "t.yaml:7:22: reconnect.min_delay_seconds: must not be above reconnect.max_delay_seconds (30 when not "
              "set), got 60");
        CHECK(load(k_minimal + "reconnect:\n  min_delay_seconds: 60\n  max_delay_seconds: 600\n")
                  .reconnect.min_delay_seconds == 60);
    }
    SECTION("the bounds themselves are accepted") {
        const auto low = load(k_minimal + "reconnect:\n  min_delay_seconds: 0.1\n  max_delay_seconds: 0.1\n"
                                          "  factor: 1\n");
        CHECK(low.reconnect.min_delay_seconds == 0.1);
        CHECK(low.reconnect.max_delay_seconds == 0.1);
        CHECK(low.reconnect.factor == 1);
        const auto high = load(k_minimal + "reconnect:\n  min_delay_seconds: 3600\n  max_delay_seconds: 3600\n"
                                           "  factor: 10\n");
        CHECK(high.reconnect.min_delay_seconds == 3600);
        CHECK(high.reconnect.max_delay_seconds == 3600);
        CHECK(high.reconnect.factor == 10);
    }
}

TEST_CASE("issue 7: cutover seconds are capped at one day", "[config][issue7]") {
    CHECK(problem_of(k_minimal + "cutover:\n  max_lag_seconds: 86401\n") ==
          "t.yaml:7:20: cutover.max_lag_seconds: must be greater than 0 and at most 86400 seconds, got 86401");
    CHECK(problem_of(k_minimal + "cutover:\n  timeout_seconds: 1e9\n") ==
          "t.yaml:7:20: cutover.timeout_seconds: must be greater than 0 and at most 86400 seconds, got 1e9");
    const auto day = load(k_minimal + "cutover:\n  max_lag_seconds: 86400\n  timeout_seconds: 86400\n");
    CHECK(day.cutover.max_lag_seconds == 86400);
    CHECK(day.cutover.timeout_seconds == 86400);
}

TEST_CASE("issue 7: inf and nan and numbers beyond a double are errors naming the key", "[config][issue7]") {
    struct Key {
        std::string section;
        std::string name;
        std::string expected; // what a non-number gets
        std::string range;    // what an out-of-range number gets
    };
    const std::vector<Key> keys = {
        {"reconnect", "min_delay_seconds", "expected a number of seconds", "must be between 0.1 and 3600 seconds"},
        {"reconnect", "max_delay_seconds", "expected a number of seconds", "must be between 0.1 and 3600 seconds"},
        {"reconnect", "factor", "expected a number", "must be between 1 and 10"},
        {"cutover", "max_lag_seconds", "expected a number of seconds",
         "must be greater than 0 and at most 86400 seconds"},
        {"cutover", "timeout_seconds", "expected a number of seconds",
         "must be greater than 0 and at most 86400 seconds"},
    };
    for (const Key& key : keys) {
        const std::string prefix =
            "t.yaml:7:" + std::to_string(key.name.size() + 5) + ": " + key.section + "." + key.name + ": ";
        for (const std::string value : {".inf", "-.inf", ".nan", ".NaN", "inf", "-inf", "nan", "infinity"}) {
            INFO(key.name << ": " << value);
            CHECK(problem_of(k_minimal + key.section + ":\n  " + key.name + ": " + value + "\n") ==
                  prefix + key.expected + ", got '" + value + "'");
        }
        for (const std::string value : {"1e400", "-1e400", "1e-400"}) {
            INFO(key.name << ": " << value);
            CHECK(problem_of(k_minimal + key.section + ":\n  " + key.name + ": " + value + "\n") ==
                  prefix + key.range + ", got " + value);
        }
    }
}

TEST_CASE("issue 7: control.token_file refuses what is not a small regular file", "[config][issue7]") {
    const TempDir dir;
    SECTION("a directory") {
        const std::string path = dir.path("sub");
        REQUIRE(std::filesystem::create_directory(path));
        CHECK(token_error(path) == "control.token_file: " + path + " is a directory, not a regular file");
    }
    SECTION("/dev/zero returns at once instead of reading forever") {
        const auto start = std::chrono::steady_clock::now();
        CHECK(token_error("/dev/zero") == "control.token_file: /dev/zero is a character device, not a regular file");
        CHECK(seconds_since(start) < 1.0);
    }
    SECTION("a FIFO without a writer does not block") {
        const std::string path = dir.path("fifo");
        REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
        const auto start = std::chrono::steady_clock::now();
        CHECK(token_error(path) == "control.token_file: " + path + " is a FIFO, not a regular file");
        CHECK(seconds_since(start) < 1.0);
    }
    SECTION("a nonexistent file names errno") {
        const std::string path = dir.path("missing");
        CHECK(token_error(path) == "control.token_file: cannot read " + path + ": No such file or directory");
    }
    SECTION("an unreadable file names errno") {
        const std::string path = dir.file("mode000", "secret\n");
        REQUIRE(::chmod(path.c_str(), 0) == 0);
        if (::geteuid() == 0) {
            SUCCEED("running as root: permission checks are bypassed, nothing to test");
        } else {
            CHECK(token_error(path) == "control.token_file: cannot read " + path + ": Permission denied");
        }
    }
    SECTION("a file larger than 4096 bytes") {
        const std::string path = dir.file("big", std::string(4097, 'a'));
        CHECK(token_error(path) == "control.token_file: " + path + " is larger than 4096 bytes; a token is one line");
        // A 100 MB file is refused as quickly: only 4097 bytes are read.
        const std::string huge = dir.path("huge");
        REQUIRE(::truncate(dir.file("huge", "x").c_str(), 100'000'000) == 0);
        const auto start = std::chrono::steady_clock::now();
        CHECK(token_error(huge) == "control.token_file: " + huge + " is larger than 4096 bytes; a token is one line");
        CHECK(seconds_since(start) < 1.0);
    }
    SECTION("a file of exactly 4096 bytes is fine") {
        CHECK(read_token_file(dir.file("max", std::string(4096, 't'))) == std::string(4096, 't'));
    }
    SECTION("surrounding whitespace is removed") {
        CHECK(read_token_file(dir.file("token", "  \ts3cret-token \r\n\n")) == "s3cret-token");
        CHECK(read_token_file("").empty());
    }
    SECTION("a file of whitespace holds no token") {
        const std::string path = dir.file("blank", " \n\t\n");
        CHECK(token_error(path) == "control.token_file: " + path + " holds no token");
    }
}

TEST_CASE("issue 7: at most 100 problems are reported and then a count of the rest", "[config][issue7]") {
    SECTION("5000 unknown keys") {
        const auto start = std::chrono::steady_clock::now();
        const auto problems = problems_of(with_unknown_keys(5000));
        CHECK(seconds_since(start) < 1.0);
        REQUIRE(problems.size() == 101);
        CHECK(starts_with(problems[0], "t.yaml:6:1: unknown_key_0: unknown key"));
        CHECK(starts_with(problems[99], "t.yaml:105:1: unknown_key_99: unknown key"));
        CHECK(problems[100] == "... and 4900 more problems");
    }
    SECTION("the first 100 in document order whichever section found them") {
        // The apply problem is found after the root keys but is first in the document.
        const auto problems = problems_of("apply:\n  workers: 0\n" + with_unknown_keys(150));
        REQUIRE(problems.size() == 101);
        CHECK(problems[0] == "t.yaml:2:12: apply.workers: must be between 1 and 64, got 0");
        CHECK(problems[100] == "... and 51 more problems");
    }
    SECTION("exactly 100 problems need no summary and 101 get a singular one") {
        const auto hundred = problems_of(with_unknown_keys(100));
        REQUIRE(hundred.size() == 100);
        CHECK(starts_with(hundred.back(), "t.yaml:105:1: unknown_key_99: unknown key"));
        const auto more = problems_of(with_unknown_keys(101));
        REQUIRE(more.size() == 101);
        CHECK(more.back() == "... and 1 more problem");
    }
}

TEST_CASE("issue 7: a configuration larger than 1 MiB is refused before parsing", "[config][issue7]") {
    // 2 MiB of distinct unknown keys: slow to parse and to report if it were parsed.
    std::string big = k_minimal;
    for (int i = 0; big.size() < 2 * 1024 * 1024; ++i) {
        big += "k" + std::to_string(i) + ": 1\n";
    }
    big.resize(2 * 1024 * 1024, '\n');
    SECTION("from a string") {
        const auto start = std::chrono::steady_clock::now();
        CHECK(problem_of(big) ==
              "t.yaml:1:1: (root): the configuration is 2097152 bytes, more than the limit of 1048576 bytes (1 MiB)");
        CHECK(seconds_since(start) < 0.5);
    }
    SECTION("from a file") {
        const TempDir dir;
        const std::string path = dir.file("big.yaml", big);
        const auto start = std::chrono::steady_clock::now();
        try {
            (void)load_from_file(path, no_env());
            FAIL("expected ConfigErrors");
        } catch (const ConfigErrors& e) {
            CHECK(e.problems() ==
                  std::vector<std::string>{path + ":1:1: (root): the configuration is 2097152 bytes, more than the "
                                                  "limit of 1048576 bytes (1 MiB)"});
        }
        CHECK(seconds_since(start) < 0.5);
    }
    SECTION("from /dev/zero, which never ends") {
        const auto start = std::chrono::steady_clock::now();
        try {
            (void)load_from_file("/dev/zero", no_env());
            FAIL("expected ConfigErrors");
        } catch (const ConfigErrors& e) {
            CHECK(e.problems() == std::vector<std::string>{"/dev/zero:1:1: (root): the configuration is more than the "
                                                           "limit of 1048576 bytes (1 MiB)"});
        }
        CHECK(seconds_since(start) < 0.5);
    }
    SECTION("exactly 1 MiB is still read") {
        std::string padded = k_minimal + "# padding\n";
        padded.resize(1024 * 1024, '#');
        padded.back() = '\n';
        CHECK(load(padded).name == "shop");
    }
}

TEST_CASE("issue 7 (finding 5): apply.spill_dir is empty or an absolute path", "[config][issue7]") {
    CHECK(load(k_minimal).apply.spill_dir.empty());
    CHECK(load(k_minimal + "apply:\n  spill_dir: \"\"\n").apply.spill_dir.empty());
    CHECK(load(k_minimal + "apply:\n  spill_dir: /var/lib/pgshift\n").apply.spill_dir == "/var/lib/pgshift");
    CHECK(load(k_minimal + "apply:\n  spill_dir: ${DIR}\n", env_of({{"DIR", "/srv/spill"}})).apply.spill_dir ==
          "/srv/spill");
    CHECK(problem_of(k_minimal + "apply:\n  spill_dir: spill\n") ==
          "t.yaml:7:14: apply.spill_dir: must be an absolute path (or empty for the default: $STATE_DIRECTORY, "
          "$TMPDIR or /var/tmp), got 'spill'");
    CHECK(problem_of(k_minimal + "apply:\n  spill_dir: ./spill\n") ==
          "t.yaml:7:14: apply.spill_dir: must be an absolute path (or empty for the default: $STATE_DIRECTORY, "
          "$TMPDIR or /var/tmp), got './spill'");
    CHECK(problem_of(k_minimal + "apply:\n  spill_dir: [a]\n") ==
          "t.yaml:7:14: apply.spill_dir: expected a string, got a list");
    // The shipped example documents it.
    std::ifstream in(std::string(PGSHIFT_SOURCE_DIR) + "/config/pgshift.example.yaml");
    REQUIRE(in);
    bool shown = false;
    for (std::string line; std::getline(in, line);) {
        shown = shown || line.rfind("  spill_dir:", 0) == 0;
    }
    CHECK(shown);
}
