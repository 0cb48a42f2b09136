// The initial copy's page ranges: every page in exactly one range, the last one open-ended.
#include "pgshift/copy/snapshot_copy.hpp"

#include <catch2/catch.hpp>

using pgshift::copy::PageRange;
using pgshift::copy::split_pages;

TEST_CASE("split_pages: small relations are one open-ended range", "[copy]")
{
    for (std::uint64_t pages : {0, 1, 100, 2048, 3071})
        CHECK(split_pages(pages, 2048) == std::vector<PageRange>{{0, 0}});
}

TEST_CASE("split_pages: large relations are consecutive ranges ending open", "[copy]")
{
    CHECK(split_pages(3072, 2048) == std::vector<PageRange>{{0, 2048}, {2048, 0}});
    CHECK(split_pages(8192, 2048) == std::vector<PageRange>{{0, 2048}, {2048, 4096}, {4096, 6144}, {6144, 0}});
    CHECK(split_pages(9000, 2048) == std::vector<PageRange>{{0, 2048}, {2048, 4096}, {4096, 6144}, {6144, 0}});
    CHECK(split_pages(9300, 2048) ==
          std::vector<PageRange>{{0, 2048}, {2048, 4096}, {4096, 6144}, {6144, 8192}, {8192, 0}});
}

TEST_CASE("split_pages: every page is covered once, and no range is far from the target size", "[copy]")
{
    for (std::uint64_t range : {1, 2, 7, 2048}) {
        for (std::uint64_t pages = 0; pages < 40 * range; pages += (range > 7 ? 97 : 1)) {
            INFO("pages " << pages << " range " << range);
            auto r = split_pages(pages, range);
            REQUIRE(!r.empty());
            CHECK(r.front().first == 0);
            CHECK(r.back().end == 0);
            for (std::size_t i = 0; i + 1 < r.size(); ++i) {
                CHECK(r[i].end == r[i + 1].first);
                CHECK(r[i].end - r[i].first == range);
            }
            if (r.size() > 1) {
                auto last = pages - r.back().first;
                CHECK(last >= range / 2);
                CHECK(last < range + range / 2 + 1);
            }
        }
    }
}

TEST_CASE("should_split: split on PostgreSQL 16+ targets by default, never with one session or an old source",
          "[copy]")
{
    using pgshift::config::SplitTables;
    using pgshift::copy::should_split;
    CHECK_FALSE(should_split(SplitTables::automatic, 4, 150000, 150000)); // one page at a time: whole
    CHECK(should_split(SplitTables::automatic, 4, 150000, 160000));
    CHECK(should_split(SplitTables::automatic, 4, 140000, 170000));
    CHECK(should_split(SplitTables::always, 4, 150000, 150000));
    CHECK_FALSE(should_split(SplitTables::never, 4, 170000, 170000));
    CHECK_FALSE(should_split(SplitTables::always, 1, 170000, 170000));  // one session: nothing to share
    CHECK_FALSE(should_split(SplitTables::always, 4, 130000, 170000));  // no TID range scans before 14
}
