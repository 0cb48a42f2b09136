// COPY streaming of one table from source to target.
#include "pgshift/copy/table_copy.hpp"

#include <libpq-fe.h>

#include <map>

namespace pgshift::copy {

namespace {

/// Frees a buffer libpq allocated for PQgetCopyData.
struct CopyBuffer {
    char* data = nullptr;
    ~CopyBuffer() { release(); }
    void release()
    {
        if (data)
            PQfreemem(data);
        data = nullptr;
    }
};

[[noreturn]] void throw_side(bool source, const std::string& table, const pg::PgError& e)
{
    std::string what = "copying " + table + (source ? " out of the source: " : " into the target: ") + e.what();
    if (source)
        throw SourceError(what, e.retryable());
    throw TargetError(what, e.retryable());
}

/// Expects `res` to be PGRES_COPY_OUT / PGRES_COPY_IN; throws with the server's error otherwise.
void expect_copy(pg::Connection& conn, pg_result* res, ExecStatusType want, const std::string& context)
{
    if (res && PQresultStatus(res) == want) {
        PQclear(res);
        return;
    }
    conn.fail(context, res);
}

/// The binary format's last message: the field count -1 alone, or after the 19-byte file header
/// when the copy has no row ("PGCOPY\n\377\r\n\0", flags, extension length). A row's field
/// count is never negative, and the header travels with the first row when there is one.
bool is_binary_trailer(const char* data, int n)
{
    constexpr int k_header = 19;
    auto ends_with_trailer = [&] {
        return static_cast<unsigned char>(data[n - 2]) == 0xff && static_cast<unsigned char>(data[n - 1]) == 0xff;
    };
    return (n == 2 || (n == k_header + 2 && data[0] == 'P')) && ends_with_trailer();
}

} // namespace

CopyFormat plan_copy(pg::Connection& source, pg::Connection& target, const std::string& table_sql)
{
    // Per column: its name, its type and whether that type's binary form is safe to carry, that
    // is a built-in type (below FirstNormalObjectId, 16384) with send and receive functions, and
    // so is its element type for arrays and the like.
    auto src = source.exec_params(
        "SELECT quote_ident(a.attname), a.atttypid::bigint, "
        "       a.atttypid < 16384 AND t.typsend <> 0 AND t.typreceive <> 0 AND "
        "       (t.typelem = 0 OR EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.oid < 16384 "
        "                                 AND e.typsend <> 0 AND e.typreceive <> 0)) "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "ORDER BY a.attnum",
        {table_sql});
    auto dst = target.exec_params("SELECT quote_ident(attname), atttypid::bigint FROM pg_attribute "
                                  "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                                  {table_sql});
    std::map<std::string, std::string> target_types;
    for (int i = 0; i < dst.rows(); ++i)
        target_types[dst.str(i, 0)] = dst.str(i, 1);
    CopyFormat f;
    f.binary = src.rows() > 0;
    for (int i = 0; i < src.rows(); ++i) {
        const auto name = src.str(i, 0);
        f.columns += (f.columns.empty() ? "" : ", ") + name;
        auto it = target_types.find(name);
        if (src.str(i, 2) != "t" || it == target_types.end() || it->second != src.str(i, 1))
            f.binary = false;
    }
    f.can_freeze =
        target
            .exec_params("SELECT c.relkind = 'r' AND has_table_privilege(c.oid, 'TRUNCATE') "
                         "       AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = c.oid) "
                         "       AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = c.oid) "
                         "FROM pg_class c WHERE c.oid = $1::regclass",
                         {table_sql})
            .get(0, 0) == "t";
    return f;
}

std::string copy_options(const CopyFormat& format, bool freeze)
{
    if (format.binary)
        return freeze ? " (FORMAT binary, FREEZE)" : " (FORMAT binary)";
    return freeze ? " (FREEZE)" : "";
}

CopyStats copy_rows(pg::Connection& source, pg::Connection& target, const std::string& copy_out,
                    const std::string& copy_in, bool binary, const std::string& label, const CopyTick& tick)
{
    CopyStats stats;
    CopyStats reported; // what `tick` was told so far
    bool in_source = true;
    try {
        expect_copy(source, PQexec(source.raw(), copy_out.c_str()), PGRES_COPY_OUT, "COPY TO STDOUT");
        in_source = false;
        expect_copy(target, PQexec(target.raw(), copy_in.c_str()), PGRES_COPY_IN, "COPY FROM STDIN");
        CopyBuffer buf;
        for (;;) {
            in_source = true;
            int n = PQgetCopyData(source.raw(), &buf.data, 0);
            if (n == -1)
                break; // done; the final result follows
            if (n < 0)
                source.fail("reading COPY data");
            in_source = false;
            if (PQputCopyData(target.raw(), buf.data, n) != 1)
                target.fail("sending COPY data");
            if (!(binary && is_binary_trailer(buf.data, n)))
                ++stats.rows; // one row per message
            buf.release();
            stats.bytes += static_cast<std::uint64_t>(n);
            if (tick && stats.bytes - reported.bytes >= k_tick_bytes) {
                tick(stats.rows - reported.rows, stats.bytes - reported.bytes);
                reported = stats;
            }
        }
        in_source = true;
        source.check(PQgetResult(source.raw()), "COPY TO STDOUT");
        while (auto* extra = PQgetResult(source.raw()))
            PQclear(extra);
        in_source = false;
        if (PQputCopyEnd(target.raw(), nullptr) != 1)
            target.fail("ending COPY");
        target.check(PQgetResult(target.raw()), "COPY FROM STDIN");
        while (auto* extra = PQgetResult(target.raw()))
            PQclear(extra);
    } catch (const pg::PgError& e) {
        throw_side(in_source, label, e);
    }
    if (tick && stats.rows != reported.rows)
        tick(stats.rows - reported.rows, stats.bytes - reported.bytes);
    return stats;
}

CopyStats copy_table(pg::Connection& source, pg::Connection& target, const std::string& table_sql,
                     const CopyFormat& format)
{
    const auto options = copy_options(format, false);
    return copy_rows(source, target, "COPY " + table_sql + " (" + format.columns + ") TO STDOUT" + options,
                     "COPY " + table_sql + " (" + format.columns + ") FROM STDIN" + options, format.binary, table_sql,
                     {});
}

} // namespace pgshift::copy
