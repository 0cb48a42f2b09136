// Replication origin capacity on the target (see origins.hpp).
#include "pgshift/apply/origins.hpp"

namespace pgshift::apply {

std::optional<std::string> origin_shortfall(pg::Connection& target, const config::Config& cfg, int workers)
{
    auto r = target.exec_params("SELECT current_setting('max_replication_slots')::int, "
                                "       (SELECT count(*) FROM pg_replication_origin), "
                                "       (SELECT count(*) FROM pg_replication_origin WHERE roname ~ $1 AND "
                                "               substring(roname from '[0-9]+$')::int < $2)",
                                {cfg.origin_pattern(), std::to_string(workers)});
    long slots = std::stol(r.str(0, 0)), existing = std::stol(r.str(0, 1)), ours = std::stol(r.str(0, 2));
    long missing = workers - ours;
    if (existing + missing <= slots)
        return std::nullopt;
    return "apply.workers = " + std::to_string(workers) + " needs " + std::to_string(missing) +
           " more replication origin(s) on the target, but its max_replication_slots (" + std::to_string(slots) +
           ") is taken by " + std::to_string(existing) +
           " existing origin(s): raise max_replication_slots on the target (a restart), drop unused origins "
           "(SELECT pg_replication_origin_drop('name')), or lower apply.workers";
}

} // namespace pgshift::apply
