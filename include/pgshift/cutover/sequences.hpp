// Sequences at cutover (ARCHITECTURE rule 13): logical decoding does not carry them, so while
// writes are fenced every sequence's state is copied to the new primary with setval.
#pragma once

#include "pgshift/pg/connection.hpp"

#include <string>
#include <vector>

namespace pgshift::cutover {

/// Copies last_value and is_called of every sequence in `schemas` from `from` to `to`, for the
/// sequences that exist on both (one query on each side per 500 sequences). Returns how many were
/// set; names those missing on `to` in `missing`.
int sync_sequences(pg::Connection& from, pg::Connection& to, const std::vector<std::string>& schemas,
                   std::vector<std::string>& missing);

} // namespace pgshift::cutover
