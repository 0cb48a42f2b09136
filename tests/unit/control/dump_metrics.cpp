// Prints render_metrics() output for the promtool CTest: `dump_metrics zero|busy`.
#include "sample_snapshot.hpp"

#include "pgshift/control/metrics.hpp"

#include <iostream>
#include <string_view>

int main(int argc, char** argv)
{
    std::string_view which = argc > 1 ? argv[1] : "busy";
    pgshift::control::StatusSnapshot snapshot;
    if (which == "busy")
        snapshot = pgshift::control::test::busy_snapshot();
    else if (which != "zero") {
        std::cerr << "usage: dump_metrics zero|busy\n";
        return 2;
    }
    std::cout << pgshift::control::render_metrics(snapshot, "0.1.0-test");
    return std::cout.good() ? 0 : 1;
}
