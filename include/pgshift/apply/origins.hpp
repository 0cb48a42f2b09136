// Replication origins of a migration on the target: whether apply.workers of them fit.
#pragma once

#include "pgshift/config/config.hpp"
#include "pgshift/pg/connection.hpp"

#include <optional>
#include <string>

namespace pgshift::apply {

/// Every replication origin keeps one of the target's max_replication_slots replication states;
/// this migration's existing origins are reused. Returns the problem (naming the fixes) when
/// `workers` origins do not fit, nothing when they do. Throws pg::PgError.
[[nodiscard]] std::optional<std::string> origin_shortfall(pg::Connection& target, const config::Config& cfg,
                                                          int workers);

} // namespace pgshift::apply
