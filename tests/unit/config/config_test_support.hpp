// Helpers shared by the configuration unit tests: a minimal valid document and loaders that
// return the problems of a document that must fail.
#pragma once

#include "pgshift/config/config.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgshift::config::test {

inline const std::string k_origin = "t.yaml";

// Lines 1-5; tests append sections after it, so their line numbers start at 6.
inline const std::string k_minimal = "name: shop\n"
                              "source:\n"
                              "  conninfo: \"host=old-db dbname=shop user=migrator\"\n"
                              "target:\n"
                              "  conninfo: \"postgresql://migrator@new-db:5432/shop\"\n";

inline EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
        const auto it = vars.find(name);
        if (it == vars.end()) {
            return std::nullopt;
        }
        return it->second;
    };
}

inline EnvLookup no_env() { return env_of({}); }

inline Config load(const std::string& yaml, const EnvLookup& env = no_env()) { return load_from_string(yaml, k_origin, env); }

// The problems of a document that must fail to load.
inline std::vector<std::string> problems_of(const std::string& yaml, const EnvLookup& env = no_env()) {
    try {
        (void)load_from_string(yaml, k_origin, env);
    } catch (const ConfigErrors& e) {
        REQUIRE_FALSE(e.problems().empty());
        return e.problems();
    }
    FAIL("expected ConfigErrors for:\n" << yaml);
    return {};
}

// The single problem of a document that must fail with exactly one.
inline std::string problem_of(const std::string& yaml, const EnvLookup& env = no_env()) {
    const auto problems = problems_of(yaml, env);
    INFO("problems: " << Catch::Detail::stringify(problems));
    REQUIRE(problems.size() == 1);
    return problems.front();
}

inline bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

} // namespace pgshift::config::test
