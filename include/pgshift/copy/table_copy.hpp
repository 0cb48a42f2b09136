// Copying one table's rows from the source to the target with COPY, inside the callers'
// transactions (so the caller decides the snapshot on the source and the commit on the target).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pgshift::copy {

struct CopyStats {
    std::uint64_t rows = 0;
    std::uint64_t bytes = 0;
};

/// The columns a copy carries: the source table's live, non-generated columns in order (quoted,
/// ready for SQL). Columns are matched by name on the target, as apply does (rule 7).
[[nodiscard]] std::vector<std::string> copy_columns(pg::Connection& source, const std::string& table_sql);

/// Streams `table_sql` from `source` (COPY ... TO STDOUT, text format) into the same table on
/// `target` (COPY ... FROM STDIN). Both connections must be idle inside a transaction the caller
/// owns. Throws SourceError or TargetError (context: the table and the side) on failure.
CopyStats copy_table(pg::Connection& source, pg::Connection& target, const std::string& table_sql,
                     const std::vector<std::string>& columns);

} // namespace pgshift::copy
