// The two shapes of a check report: lines for people, one JSON document for scripts.
#include "pgshift/check/check.hpp"

#include <boost/json.hpp>

namespace pgshift::check {

std::string to_text(const Report& report)
{
    std::string out;
    for (const auto& p : report.problems)
        out += std::string(name(p.severity)) + ": " + name(p.side) + ": " + p.message + "\n";
    int errors = report.count(Severity::error), warnings = report.count(Severity::warning);
    auto counted = [](int n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); };
    if (errors == 0) {
        out += "check passed: pgshift run can start (source PostgreSQL " + report.source_version +
               ", target PostgreSQL " + report.target_version + ", " + counted(report.tables, "table") + ", " +
               counted(warnings, "warning") + ")\n";
    } else {
        out += "check failed: " + counted(errors, "error") + ", " + counted(warnings, "warning") +
               "; pgshift run would not succeed until the errors above are fixed\n";
    }
    return out;
}

std::string to_json(const Report& report)
{
    namespace json = boost::json;
    json::array problems;
    for (const auto& p : report.problems)
        problems.push_back(json::object{{"severity", name(p.severity)},
                                        {"side", name(p.side)},
                                        {"code", p.code},
                                        {"message", p.message}});
    auto optional_text = [](const std::string& s) { return s.empty() ? json::value(nullptr) : json::value(s); };
    json::object doc{{"ok", report.ok()},
                     {"errors", report.count(Severity::error)},
                     {"warnings", report.count(Severity::warning)},
                     {"source_version", optional_text(report.source_version)},
                     {"target_version", optional_text(report.target_version)},
                     {"tables", report.tables < 0 ? json::value(nullptr) : json::value(report.tables)},
                     {"problems", std::move(problems)}};
    return json::serialize(doc) + "\n";
}

} // namespace pgshift::check
