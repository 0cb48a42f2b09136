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

/// How one table's rows travel from the source into the target table of the same name.
struct CopyFormat {
    /// "a, b, c": the source table's live, non-generated columns in order (quoted). Columns are
    /// matched by name on the target, as apply does (rule 7).
    std::string columns;
    /// COPY's binary format: every column's type is a built-in type (the same OID on every
    /// PostgreSQL release) with binary send and receive functions, and the target column has that
    /// very type. The binary forms of built-in types are part of the wire protocol, so no value
    /// changes, and neither side spends CPU printing and parsing text. Anything else (extension,
    /// enum and domain types, a column whose type differs on the target) travels as text.
    bool binary = false;
    /// The target table may be emptied and loaded with COPY ... FREEZE in one transaction: a plain
    /// table (not partitioned, no inheritance children), no foreign key pointing at it, and this
    /// role may TRUNCATE it. Frozen rows need no hint bits and no later freezing VACUUM on the
    /// target; the index builds after the copy scan all-visible pages.
    bool can_freeze = false;
};

/// Plans the copy of `table_sql` (see CopyFormat); reads the catalogs of both servers.
[[nodiscard]] CopyFormat plan_copy(pg::Connection& source, pg::Connection& target, const std::string& table_sql);

/// The COPY options clause for `format`: "", " (FORMAT binary)", " (FREEZE)" ...
[[nodiscard]] std::string copy_options(const CopyFormat& format, bool freeze);

/// Streams `table_sql` from `source` (COPY ... TO STDOUT) into the same table on `target`
/// (COPY ... FROM STDIN), in `format`. Both connections must be idle inside a transaction the
/// caller owns. Throws SourceError or TargetError (context: the table and the side) on failure.
CopyStats copy_table(pg::Connection& source, pg::Connection& target, const std::string& table_sql,
                     const CopyFormat& format);

/// Called with the rows and bytes copied since the last call (about every k_tick_bytes, and once
/// at the end); may throw to abandon the copy (the caller then drops both connections).
using CopyTick = std::function<void(std::uint64_t rows, std::uint64_t bytes)>;
inline constexpr std::uint64_t k_tick_bytes = 1 << 20;

/// The general form: runs `copy_out` (COPY ... TO STDOUT) on `source` and `copy_in` (COPY ...
/// FROM STDIN) on `target`, both in the text format or both in the binary one (`binary`),
/// relaying every row. `label` names what is copied in errors. Same transaction rules and errors
/// as copy_table.
CopyStats copy_rows(pg::Connection& source, pg::Connection& target, const std::string& copy_out,
                    const std::string& copy_in, bool binary, const std::string& label, const CopyTick& tick);

} // namespace pgshift::copy
