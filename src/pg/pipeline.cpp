// libpq pipeline transport (see pipeline.hpp).
#include "pgshift/pg/pipeline.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>

namespace pgshift::pg {

void Pipeline::enter()
{
    if (!PQenterPipelineMode(conn_.raw()))
        conn_.fail("could not enter pipeline mode");
    active_ = true;
}

void Pipeline::leave()
{
    if (active_ && !PQexitPipelineMode(conn_.raw()))
        conn_.fail("could not leave pipeline mode");
    active_ = false;
}

namespace {
constexpr std::size_t k_max_bytes_in_flight = 4u << 20;
}

void Pipeline::after_send(Expect e, std::size_t bytes)
{
    expects_.push_back(e);
    bytes_in_flight_ += bytes;
    if (expects_.size() >= max_in_flight_ || bytes_in_flight_ >= k_max_bytes_in_flight) {
        // Bound the pipeline: ask the server to flush, then read half of the results.
        if (!PQsendFlushRequest(conn_.raw()) || PQflush(conn_.raw()) != 0)
            conn_.fail("could not flush the pipeline");
        auto keep = std::min(expects_.size() / 2, max_in_flight_ / 2);
        while (expects_.size() > keep)
            read_one();
        bytes_in_flight_ = 0;
    }
}

void Pipeline::send_query(const std::string& sql, const std::vector<const char*>& params, Expect e)
{
    if (!PQsendQueryParams(conn_.raw(), sql.c_str(), static_cast<int>(params.size()), nullptr, params.data(), nullptr,
                           nullptr, 0))
        conn_.fail(std::string("could not send ") + e.op);
    after_send(e);
}

void Pipeline::send_prepare(const std::string& name, const std::string& sql, int nparams, Expect e)
{
    if (!PQsendPrepare(conn_.raw(), name.c_str(), sql.c_str(), nparams, nullptr))
        conn_.fail("could not send PREPARE");
    after_send(e);
}

void Pipeline::send_prepared(const std::string& name, const std::vector<const char*>& values, Expect e,
                             std::size_t bytes)
{
    if (!PQsendQueryPrepared(conn_.raw(), name.c_str(), static_cast<int>(values.size()), values.data(), nullptr,
                             nullptr, 0))
        conn_.fail(std::string("could not send ") + e.op);
    after_send(e, bytes);
}

void Pipeline::copy_in(const std::string& sql, std::string_view data, Expect e)
{
    bool was_active = active_;
    if (active_) {
        sync();
        leave();
    }
    if (!failure_) {
        PGconn* c = conn_.raw();
        PGresult* res = PQexec(c, sql.c_str());
        if (PQresultStatus(res) != PGRES_COPY_IN) {
            record_failure(e, res);
            PQclear(res);
            while (PGresult* more = PQgetResult(c))
                PQclear(more);
        } else {
            PQclear(res);
            constexpr std::size_t k_chunk = 1u << 20;
            for (std::size_t off = 0; off < data.size(); off += k_chunk) {
                auto n = std::min(k_chunk, data.size() - off);
                if (PQputCopyData(c, data.data() + off, static_cast<int>(n)) != 1)
                    conn_.fail("could not send COPY data");
            }
            if (PQputCopyEnd(c, nullptr) != 1)
                conn_.fail("could not end COPY");
            while (PGresult* r = PQgetResult(c)) {
                if (PQresultStatus(r) != PGRES_COMMAND_OK)
                    record_failure(e, r);
                PQclear(r);
            }
        }
    }
    if (was_active)
        enter();
}

void Pipeline::record_failure(const Expect& e, PGresult* res)
{
    if (failure_)
        return;
    PGconn* c = conn_.raw();
    auto st = PQresultStatus(res);
    if (st != PGRES_FATAL_ERROR) {
        failure_ = Failure{e, std::string("unexpected result status ") + PQresStatus(st), "", true, std::nullopt};
        return;
    }
    const char* ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    PgError pe(PQresultErrorMessage(res), ss ? ss : "", PQstatus(c) != CONNECTION_OK || severity_ends_session(res));
    std::string msg = PQresultErrorMessage(res);
    while (!msg.empty() && msg.back() == '\n')
        msg.pop_back();
    failure_ = Failure{e, std::move(msg), pe.sqlstate(), pe.retryable(), violation_of(res)};
}

void Pipeline::sync()
{
    if (!PQpipelineSync(conn_.raw()))
        conn_.fail("could not send pipeline sync");
    while (!expects_.empty())
        read_one();
    PGresult* res = PQgetResult(conn_.raw());
    if (!res)
        conn_.fail("pipeline sync missing");
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
        conn_.fail("pipeline sync missing", res); // e.g. FATAL 57P01: classified by its SQLSTATE
    PQclear(res);
}

void Pipeline::read_one()
{
    Expect e = expects_.front();
    expects_.pop_front();
    PGconn* c = conn_.raw();
    PGresult* res = PQgetResult(c);
    if (!res)
        conn_.fail("pipeline ended early");
    auto st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_ABORTED) {
        // follows an earlier error, which is already recorded
    } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        record_failure(e, res); // an error; or libpq out of step with us: a new session starts clean
    } else if (e.rows > 0) {
        const char* n = PQcmdTuples(res);
        if (*n && std::strtoull(n, nullptr, 10) < e.rows)
            missing_.push_back(e);
    }
    PQclear(res);
    if (PGresult* extra = PQgetResult(c)) { // each query ends with a NULL result
        PQclear(extra);
        conn_.fail("pipeline out of step");
    }
}

} // namespace pgshift::pg
