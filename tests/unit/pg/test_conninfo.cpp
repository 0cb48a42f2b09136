// conninfo_with: the keywords pgshift adds to an operator's conninfo.
#include "pgshift/pg/connection.hpp"

#include <catch2/catch.hpp>

#include <map>

using pgshift::pg::conninfo_with;
using pgshift::pg::parse_conninfo;

namespace {
std::map<std::string, std::string> keywords(const std::string& conninfo)
{
    auto parsed = parse_conninfo(conninfo);
    return {parsed.begin(), parsed.end()};
}
} // namespace

TEST_CASE("conninfo_with overrides a keyword the conninfo sets and adds the others", "[unit][pg]")
{
    auto k = keywords(conninfo_with("host=db.example port=5433 application_name=psql dbname=shop",
                                    {{"application_name", "pgshift_m_w0"}, {"client_encoding", "UTF8"}}));
    CHECK(k["host"] == "db.example");
    CHECK(k["port"] == "5433");
    CHECK(k["dbname"] == "shop");
    CHECK(k["application_name"] == "pgshift_m_w0");
    CHECK(k["client_encoding"] == "UTF8");
}

TEST_CASE("conninfo_with keeps the conninfo's options and puts pgshift's after them", "[unit][pg]")
{
    const std::vector<std::pair<std::string, std::string>> ours{{"options", "-c search_path=pg_catalog"}};
    // key=value form, with a value libpq has to unquote
    CHECK(keywords(conninfo_with("host=h options='endpoint=ep-cool-1 -c work_mem=64MB'", ours))["options"] ==
          "endpoint=ep-cool-1 -c work_mem=64MB -c search_path=pg_catalog");
    // URI form
    CHECK(keywords(conninfo_with("postgresql://u@h/db?options=-c%20statement_timeout%3D0", ours))["options"] ==
          "-c statement_timeout=0 -c search_path=pg_catalog");
    // none of its own
    CHECK(keywords(conninfo_with("host=h", ours))["options"] == "-c search_path=pg_catalog");
    // no options added: the conninfo's stay as they are
    CHECK(keywords(conninfo_with("host=h options='-c work_mem=64MB'", {{"application_name", "x"}}))["options"] ==
          "-c work_mem=64MB");
}
