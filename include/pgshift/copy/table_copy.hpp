// Copying one table's rows from the source to the target with COPY, inside the callers'
// transactions (so the caller decides the snapshot on the source and the commit on the target).
#pragma once

#include "pgshift/pg/connection.hpp"

#include <cstdint>
#include <functional>
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

/// Called with the rows and bytes copied since the last call (about every k_tick_bytes, and once
/// at the end); may throw to abandon the copy (the caller then drops both connections).
using CopyTick = std::function<void(std::uint64_t rows, std::uint64_t bytes)>;
inline constexpr std::uint64_t k_tick_bytes = 1 << 20;

/// The general form: runs `copy_out` (COPY ... TO STDOUT, text format) on `source` and
/// `copy_in` (COPY ... FROM STDIN) on `target`, relaying every row. `label` names what is
/// copied in errors. Same transaction rules and errors as copy_table.
CopyStats copy_rows(pg::Connection& source, pg::Connection& target, const std::string& copy_out,
                    const std::string& copy_in, const std::string& label, const CopyTick& tick);

/// "a, b, c" from quoted column names.
[[nodiscard]] std::string column_list(const std::vector<std::string>& columns);

} // namespace pgshift::copy
