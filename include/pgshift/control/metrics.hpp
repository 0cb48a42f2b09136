// Prometheus text exposition (SPEC section 4) rendered from one StatusSnapshot.
#pragma once

#include "pgshift/control/status.hpp"

#include <string>

namespace pgshift::control {

/// Content-Type of the text exposition format that render_metrics produces.
inline constexpr const char* k_metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every SPEC section 4 metric from `snapshot`; `version` labels pgshift_build_info.
///
/// Pure function of its arguments: the families are built at render time, so there is no
/// registry to keep in sync with the daemon and every labelled series is always present.
[[nodiscard]] std::string render_metrics(const StatusSnapshot& snapshot, const std::string& version);

} // namespace pgshift::control
