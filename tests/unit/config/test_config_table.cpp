// Unit tests for the table of keys (issue 12): keys(), diff(), cutover.switch_command, and the
// unknown-key messages the table drives.
#include "pgshift/config/config.hpp"

#include "config_test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace pgshift::config;
using namespace pgshift::config::test;
using Catch::Matchers::Contains;

namespace Catch {
template <> struct StringMaker<ConfigChange> {
    static std::string convert(const ConfigChange& change) {
        return change.key + (change.reloadable ? " (reloadable)" : " (restart)");
    }
};
} // namespace Catch

namespace {

// A document as dotted key -> YAML value, written as nested maps.
using Values = std::map<std::string, std::string>;

std::string render(const Values& values) {
    std::string top;
    std::map<std::string, std::string> sections;
    for (const auto& [key, value] : values) {
        const std::size_t dot = key.find('.');
        if (dot == std::string::npos) {
            top += key + ": " + value + "\n";
        } else {
            sections[key.substr(0, dot)] += "  " + key.substr(dot + 1) + ": " + value + "\n";
        }
    }
    for (const auto& [section, lines] : sections) {
        top += section + ":\n" + lines;
    }
    return top;
}

const Values k_required = {{"name", "shop"}, {"source.conninfo", "host=a"}, {"target.conninfo", "host=b"}};

// A base every key can be changed from alone: fence_command is set so that fence: command is
// valid too.
Values base_values() {
    Values values = k_required;
    values["cutover.fence_command"] = "fence-on";
    return values;
}

// For every key, a valid value other than its value in base_values(). A key added to the table
// without a value here fails "every key ..." below, so the new key is tested too.
const Values k_other_values = {
    {"name", "other"},
    {"source.conninfo", "host=c"},
    {"target.conninfo", "\"postgresql://u@d/db\""},
    {"tables.include", "[\"public.*\"]"},
    {"tables.exclude", "[public.tmp_*]"},
    {"initial_copy.enabled", "false"},
    {"initial_copy.workers", "8"},
    {"initial_copy.split_tables", "always"},
    {"schema", "verify"},
    {"apply.workers", "8"},
    {"apply.on_missing_row", "skip"},
    {"apply.max_queue_bytes", "1048576"},
    {"apply.spill_dir", "/var/lib/pgshift"},
    {"control.listen", "\"127.0.0.1:9000\""},
    {"control.token_file", "/etc/pgshift/token"},
    {"reconnect.min_delay_seconds", "1"},
    {"reconnect.max_delay_seconds", "60"},
    {"reconnect.factor", "3"},
    {"cutover.fence", "none"},
    {"cutover.fence_command", "\"pgfence on\""},
    {"cutover.unfence_command", "\"pgfence off\""},
    {"cutover.switch_command", "/usr/local/bin/repoint-dns"},
    {"cutover.max_lag_seconds", "2.5"},
    {"cutover.timeout_seconds", "300"},
    {"cutover.sync_sequences", "false"},
    {"cutover.verify", "checksums"},
    {"log.level", "debug"},
    {"log.format", "json"},
};

const KeyInfo* info_of(const std::string& key) {
    const auto all = keys();
    const auto it = std::find_if(all.begin(), all.end(), [&](const KeyInfo& info) { return info.key == key; });
    return it == all.end() ? nullptr : &*it;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// cutover.switch_command

TEST_CASE("config table: cutover.switch_command is read as a string, default empty", "[config][table]") {
    CHECK(load(k_minimal).cutover.switch_command.empty());
    CHECK(load(k_minimal + "cutover:\n  switch_command: \"/usr/local/bin/repoint-dns --to new-db\"\n")
              .cutover.switch_command == "/usr/local/bin/repoint-dns --to new-db");
    CHECK(load(k_minimal + "cutover:\n  switch_command: \"\"\n").cutover.switch_command.empty());
    // Like the other commands: ${VAR} expanded, and a command of the fence does not need it.
    const Config expanded =
        load(k_minimal + "cutover:\n  fence: command\n  fence_command: fence\n  switch_command: \"${SWITCH}\"\n",
             env_of({{"SWITCH", "pgbouncer-repoint new-db"}}));
    CHECK(expanded.cutover.switch_command == "pgbouncer-repoint new-db");
    CHECK(expanded.cutover.fence_command == "fence");
    CHECK(problem_of(k_minimal + "cutover:\n  switch_command: [a, b]\n") ==
          "t.yaml:7:19: cutover.switch_command: expected a string, got a list");
    CHECK(problem_of(k_minimal + "cutover:\n  switch_command: \"${NOPE}\"\n") ==
          "t.yaml:7:19: cutover.switch_command: environment variable NOPE is not set (use ${NOPE:-default} for a "
          "default)");
    const KeyInfo* info = info_of("cutover.switch_command");
    REQUIRE(info != nullptr);
    CHECK(info->type == ValueType::string);
    CHECK(info->reloadable);
    CHECK_FALSE(info->required);
}

// ---------------------------------------------------------------------------------------------
// keys()

TEST_CASE("config table: reloadable are log.level, log.format, control.token_file, cutover.*, reconnect.*, "
          "apply.on_missing_row",
          "[config][table]") {
    const std::set<std::string> reloadable_outside_sections = {"log.level", "log.format", "control.token_file",
                                                               "apply.on_missing_row"};
    for (const KeyInfo& info : keys()) {
        const std::string key(info.key);
        INFO("key: " << key);
        const bool expected = starts_with(key, "cutover.") || starts_with(key, "reconnect.") ||
                              reloadable_outside_sections.count(key) == 1;
        CHECK(info.reloadable == expected);
    }
}

TEST_CASE("config table: keys() names each key once, with its type and choices", "[config][table]") {
    std::set<std::string> seen;
    for (const KeyInfo& info : keys()) {
        INFO("key: " << info.key);
        CHECK(seen.insert(std::string(info.key)).second);
        CHECK(info.choices.empty() == (info.type != ValueType::choice));
    }
    REQUIRE(info_of("source.conninfo") != nullptr);
    CHECK(info_of("source.conninfo")->type == ValueType::conninfo);
    REQUIRE(info_of("apply.max_queue_bytes") != nullptr);
    CHECK(info_of("apply.max_queue_bytes")->type == ValueType::byte_size);
    REQUIRE(info_of("tables.include") != nullptr);
    CHECK(info_of("tables.include")->type == ValueType::glob_list);
    REQUIRE(info_of("cutover.fence") != nullptr);
    const auto fence = info_of("cutover.fence")->choices;
    CHECK(std::vector<std::string_view>(fence.begin(), fence.end()) ==
          std::vector<std::string_view>{"read_only", "command", "none"});
    CHECK(info_of("cutover") == nullptr); // sections are not keys
}

TEST_CASE("config table: a key without a default is required, every other one takes its default",
          "[config][table]") {
    // Config{} holds the defaults of config.hpp; a file with only the required keys differs from it
    // in those keys and nowhere else.
    const std::vector<ConfigChange> changes = diff(Config{}, load(render(k_required)));
    std::vector<ConfigChange> expected;
    for (const KeyInfo& info : keys()) {
        if (info.required) {
            expected.push_back({std::string(info.key), info.reloadable});
        }
    }
    CHECK(changes == expected);
    CHECK(changes == std::vector<ConfigChange>{
                         {"name", false}, {"source.conninfo", false}, {"target.conninfo", false}});
}

// ---------------------------------------------------------------------------------------------
// diff()

TEST_CASE("config table: diff of one reloadable and one restart key", "[config][table]") {
    const Config before = load(k_minimal);
    CHECK(diff(before, before).empty());
    CHECK(diff(before, load(k_minimal)).empty());

    const Config lag = load(k_minimal + "cutover:\n  max_lag_seconds: 5\n");
    CHECK(diff(before, lag) == std::vector<ConfigChange>{{"cutover.max_lag_seconds", true}});

    const Config workers = load(k_minimal + "apply:\n  workers: 8\n");
    CHECK(diff(before, workers) == std::vector<ConfigChange>{{"apply.workers", false}});

    // Both at once, in table order (apply before cutover), whichever way round.
    const Config both = load(k_minimal + "cutover:\n  max_lag_seconds: 5\napply:\n  workers: 8\n");
    const std::vector<ConfigChange> expected = {{"apply.workers", false}, {"cutover.max_lag_seconds", true}};
    CHECK(diff(before, both) == expected);
    CHECK(diff(both, before) == expected);

    // A value written differently but equal is no change.
    CHECK(diff(lag, load(k_minimal + "cutover:\n  max_lag_seconds: 5.0\n")).empty());
}

TEST_CASE("config table: diff of cutover.switch_command", "[config][table]") {
    const Config before = load(k_minimal);
    const Config after = load(k_minimal + "cutover:\n  switch_command: repoint\n");
    CHECK(diff(before, after) == std::vector<ConfigChange>{{"cutover.switch_command", true}});
}

TEST_CASE("config table: every key is read into its own field and named by diff when it changes",
          "[config][table]") {
    const Values base = base_values();
    const Config base_config = load(render(base));
    std::set<std::string> table_keys;
    for (const KeyInfo& info : keys()) {
        const std::string key(info.key);
        table_keys.insert(key);
        INFO("key: " << key);
        const auto other = k_other_values.find(key);
        REQUIRE(other != k_other_values.end()); // a new key needs a value in k_other_values
        Values changed = base;
        changed[key] = other->second;
        const Config changed_config = load(render(changed));
        CHECK(diff(base_config, changed_config) == std::vector<ConfigChange>{{key, info.reloadable}});
        // copy_value carries exactly that key's value (what a SIGHUP does for reloadable ones).
        Config copied = base_config;
        CHECK(copy_value(key, copied, changed_config));
        CHECK(diff(copied, changed_config).empty());
        // shown_value shows it, except where a secret may be (conninfos, cutover commands).
        const bool secret = info.type == ValueType::conninfo || key.ends_with("_command");
        CHECK(shown_value(key, base_config).has_value() == !secret);
        if (!secret) {
            CHECK(shown_value(key, base_config) != shown_value(key, changed_config));
        }
    }
    Config unchanged = base_config;
    CHECK_FALSE(copy_value("no.such_key", unchanged, base_config));
    CHECK_FALSE(shown_value("no.such_key", base_config).has_value());
    // And no value is kept for a key that is gone.
    for (const auto& [key, value] : k_other_values) {
        CHECK(table_keys.count(key) == 1);
    }
}

TEST_CASE("config table: every choice of every enum key is stored as a value of its own", "[config][table]") {
    for (const KeyInfo& info : keys()) {
        if (info.type != ValueType::choice) {
            continue;
        }
        std::vector<Config> configs;
        for (const std::string_view choice : info.choices) {
            Values values = base_values();
            values[std::string(info.key)] = std::string(choice);
            configs.push_back(load(render(values)));
        }
        for (std::size_t i = 0; i < configs.size(); ++i) {
            for (std::size_t j = 0; j < configs.size(); ++j) {
                INFO(info.key << ": " << info.choices[i] << " against " << info.choices[j]);
                const auto expected = i == j ? std::vector<ConfigChange>{}
                                             : std::vector<ConfigChange>{{std::string(info.key), info.reloadable}};
                CHECK(diff(configs[i], configs[j]) == expected);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown keys, from the same table

TEST_CASE("config table: unknown keys are still rejected with a suggestion", "[config][table]") {
    SECTION("a typo of the new key") {
        CHECK(problem_of(k_minimal + "cutover:\n  swich_command: x\n") ==
              "t.yaml:7:3: cutover.swich_command: unknown key (did you mean 'cutover.switch_command'?)");
    }
    SECTION("the new key at the wrong level") {
        CHECK(problem_of(k_minimal + "switch_command: x\n") ==
              "t.yaml:6:1: switch_command: unknown key (did you mean 'cutover.switch_command'?)");
    }
    SECTION("the allowed keys of a section include the new key") {
        CHECK(problem_of(k_minimal + "cutover:\n  colour: red\n") ==
              "t.yaml:7:3: cutover.colour: unknown key (expected one of: fence, fence_command, unfence_command, "
              "switch_command, max_lag_seconds, timeout_seconds, sync_sequences, verify)");
    }
    SECTION("every key of a section written at the top level is pointed to its section") {
        for (const KeyInfo& info : keys()) {
            const std::string key(info.key);
            const std::size_t dot = key.find('.');
            if (dot == std::string::npos) {
                continue;
            }
            const std::string leaf = key.substr(dot + 1);
            INFO("key: " << key);
            const std::string problem = problem_of(k_minimal + leaf + ": x\n");
            CHECK(starts_with(problem, "t.yaml:6:1: " + leaf + ": unknown key (did you mean "));
            CHECK_THAT(problem, Contains("'" + key + "'"));
        }
    }
}

TEST_CASE("config table: the shipped example shows every key of the table", "[config][table]") {
    std::ifstream in(std::string(PGSHIFT_SOURCE_DIR) + "/config/pgshift.example.yaml");
    REQUIRE(in);
    // Dotted keys of the example, from its top-level and indented key lines (comments skipped).
    std::set<std::string> shown;
    std::string section;
    for (std::string line; std::getline(in, line);) {
        const std::size_t start = line.find_first_not_of(' ');
        const std::size_t colon = line.find(':');
        if (start == std::string::npos || line[start] == '#' || colon == std::string::npos) {
            continue;
        }
        const std::string name = line.substr(start, colon - start);
        if (start == 0) {
            section = name;
            shown.insert(name);
        } else {
            shown.insert(section + "." + name);
        }
    }
    for (const KeyInfo& info : keys()) {
        INFO("key: " << info.key);
        CHECK(shown.count(std::string(info.key)) == 1);
    }
}
