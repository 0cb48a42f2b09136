// Unit tests for the project's one host:port parser and conninfo quoter.
#include "pgshift/common/address.hpp"

#include <catch2/catch.hpp>

using pgshift::conninfo_quote;
using pgshift::parse_host_port;

TEST_CASE("parse_host_port splits host:port and [v6]:port and names what is wrong", "[common][address]")
{
    std::string why;
    auto a = parse_host_port("db.example.com:5432", why);
    REQUIRE(a);
    CHECK(a->host == "db.example.com");
    CHECK(a->port == 5432);
    CHECK_FALSE(a->bracketed);
    auto b = parse_host_port("[::1]:8187", why);
    REQUIRE(b);
    CHECK(b->host == "::1");
    CHECK(b->port == 8187);
    CHECK(b->bracketed);
    CHECK(parse_host_port("127.0.0.1:0", why)->port == 0);
    struct Bad {
        const char* text;
        const char* why;
    };
    for (auto bad : {Bad{"localhost", "expected host:port"},
                     Bad{"::1:80", "an IPv6 address must be written in brackets, e.g. [::1]:8187"},
                     Bad{":80", "missing host before ':' (use 0.0.0.0 to listen on every IPv4 address)"},
                     Bad{"[::1:80", "missing ']' after the IPv6 address"},
                     Bad{"[::1]80", "expected ':' and a port after ']'"}, Bad{"h:", "the port must be a number from 1 to 65535"},
                     Bad{"h:65536", "the port must be a number from 1 to 65535"},
                     Bad{"h:+80", "the port must be a number from 1 to 65535"},
                     Bad{"h:80x", "the port must be a number from 1 to 65535"}}) {
        INFO(bad.text);
        why.clear();
        CHECK_FALSE(parse_host_port(bad.text, why));
        CHECK(why == bad.why);
    }
}

TEST_CASE("conninfo_quote leaves plain values alone and quotes the rest as libpq reads them", "[common][address]")
{
    CHECK(conninfo_quote("shop") == "shop");
    CHECK(conninfo_quote("") == "''");
    CHECK(conninfo_quote("a b") == "'a b'");
    CHECK(conninfo_quote("it's") == "'it\\'s'");
    CHECK(conninfo_quote("c:\\dir") == "'c:\\\\dir'");
    CHECK(conninfo_quote("-c search_path=pg_catalog") == "'-c search_path=pg_catalog'");
}
