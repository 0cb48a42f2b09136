// libpq pipeline transport (see pipeline.hpp).
#include "pgshift/pg/pipeline.hpp"

#include <libpq-fe.h>

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

void Pipeline::after_send(Expect e)
{
    expects_.push_back(e);
    if (expects_.size() >= max_in_flight_) {
        // Bound the pipeline: ask the server to flush, then read half of the results.
        if (!PQsendFlushRequest(conn_.raw()) || PQflush(conn_.raw()) != 0)
            conn_.fail("could not flush the pipeline");
        while (expects_.size() > max_in_flight_ / 2)
            read_one();
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

void Pipeline::send_prepared(const std::string& name, const std::vector<const char*>& values, Expect e)
{
    if (!PQsendQueryPrepared(conn_.raw(), name.c_str(), static_cast<int>(values.size()), values.data(), nullptr,
                             nullptr, 0))
        conn_.fail(std::string("could not send ") + e.op);
    after_send(e);
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
    if (st == PGRES_FATAL_ERROR) {
        if (!failure_) {
            const char* ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            PgError pe(PQresultErrorMessage(res), ss ? ss : "",
                       PQstatus(c) != CONNECTION_OK || severity_ends_session(res));
            std::string msg = PQresultErrorMessage(res);
            while (!msg.empty() && msg.back() == '\n')
                msg.pop_back();
            failure_ = Failure{e, std::move(msg), pe.sqlstate(), pe.retryable()};
        }
    } else if (st == PGRES_PIPELINE_ABORTED) {
        // follows an earlier error, which is already recorded
    } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        if (!failure_) // libpq out of step with us: a new session starts clean
            failure_ = Failure{e, std::string("unexpected result status ") + PQresStatus(st), "", true};
    } else if (e.must_affect_row) {
        const char* n = PQcmdTuples(res);
        if (*n && std::strtoull(n, nullptr, 10) == 0)
            missing_.push_back(e);
    }
    PQclear(res);
    if (PGresult* extra = PQgetResult(c)) { // each query ends with a NULL result
        PQclear(extra);
        conn_.fail("pipeline out of step");
    }
}

} // namespace pgshift::pg
