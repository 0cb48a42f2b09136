// Lsn text conversions: must match pg_lsn's input and output exactly, since LSNs cross into SQL.
#include "pgshift/common/lsn.hpp"

#include <catch2/catch.hpp>

#include <string>

using pgshift::Lsn;

TEST_CASE("Lsn prints like pg_lsn: upper-case hex halves without padding", "[lsn]")
{
    CHECK(Lsn().str() == "0/0");
    CHECK(Lsn(0x16B3748).str() == "0/16B3748");
    CHECK(Lsn(0x16B374D848).str() == "16/B374D848");
    CHECK(Lsn(0x100000000).str() == "1/0");
    CHECK(Lsn(0xFFFFFFFFFFFFFFFF).str() == "FFFFFFFF/FFFFFFFF");
}

TEST_CASE("Lsn parses what pg_lsn accepts", "[lsn]")
{
    CHECK(Lsn::parse("0/0") == Lsn(0));
    CHECK(Lsn::parse("0/16B3748") == Lsn(0x16B3748));
    CHECK(Lsn::parse("16/B374D848") == Lsn(0x16B374D848));
    CHECK(Lsn::parse("16/b374d848") == Lsn(0x16B374D848)); // lower case, as psql users type it
    CHECK(Lsn::parse("00000016/0000000A") == Lsn(0x160000000A));
    CHECK(Lsn::parse("FFFFFFFF/FFFFFFFF") == Lsn(0xFFFFFFFFFFFFFFFF));
}

TEST_CASE("Lsn::parse rejects anything else", "[lsn]")
{
    for (const char* bad : {"", "/", "0", "0/", "/0", "0//0", "1/2/3", "123456789/0", "0/123456789", "G/0", "0/G",
                            "0x1/0", "-1/0", "+1/0", " 0/0", "0/0 ", "0 /0", "0/ 0", "1.5/0", "0/0\n"}) {
        INFO("input \"" << bad << "\"");
        CHECK(!Lsn::parse(bad));
    }
    CHECK(!Lsn::parse(std::string_view("0/0\0", 4)));
}

TEST_CASE("Lsn print and parse round-trip, and order like the integers", "[lsn]")
{
    for (std::uint64_t v : {0ull, 1ull, 0xFFFFFFFFull, 0x100000000ull, 0x16B374D848ull, 0xFFFFFFFFFFFFFFFFull}) {
        INFO(v);
        auto back = Lsn::parse(Lsn(v).str());
        REQUIRE(back);
        CHECK(back->value() == v);
    }
    CHECK(Lsn(0xFFFFFFFF) < Lsn(0x100000000));
    CHECK(*Lsn::parse("1/0") > *Lsn::parse("0/FFFFFFFF"));
    CHECK(Lsn(5).is_zero() == false);
    CHECK(Lsn().is_zero());
}
