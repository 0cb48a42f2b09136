// COPY streaming of one table from source to target.
#include "pgshift/copy/table_copy.hpp"

#include <libpq-fe.h>

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

} // namespace

std::vector<std::string> copy_columns(pg::Connection& source, const std::string& table_sql)
{
    auto r = source.exec_params("SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::regclass "
                                "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                                {table_sql});
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(r.str(i, 0));
    return out;
}

CopyStats copy_rows(pg::Connection& source, pg::Connection& target, const std::string& copy_out,
                    const std::string& copy_in, const std::string& label, const CopyTick& tick)
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
            buf.release();
            ++stats.rows; // text format: one row per message
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
                     const std::vector<std::string>& columns)
{
    auto list = column_list(columns);
    return copy_rows(source, target, "COPY " + table_sql + " (" + list + ") TO STDOUT",
                     "COPY " + table_sql + " (" + list + ") FROM STDIN", table_sql, {});
}

std::string column_list(const std::vector<std::string>& columns)
{
    std::string list;
    for (const auto& c : columns)
        list += (list.empty() ? "" : ", ") + c;
    return list;
}

} // namespace pgshift::copy
