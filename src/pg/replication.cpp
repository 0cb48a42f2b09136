// Walsender connection: replication commands and CopyBoth frame I/O.
#include "pgshift/pg/replication.hpp"

#include <libpq-fe.h>
#include <poll.h>

namespace pgshift::pg {

ReplicationConnection::ReplicationConnection(const std::string& conninfo, const std::string& application_name)
    : conn_(conninfo_with(conninfo, {{"replication", "database"},
                                     {"application_name", application_name},
                                     {"options", std::string("-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 ") +
                                                     k_no_timeouts},
                                     {"client_encoding", "UTF8"},
                                     {"keepalives", "1"}}))
{
}

ReplicationConnection::~ReplicationConnection() { release_buffer(); }


void ReplicationConnection::release_buffer()
{
    if (buffer_) {
        PQfreemem(buffer_);
        buffer_ = nullptr;
    }
}

SystemIdentity ReplicationConnection::identify_system()
{
    auto r = conn_.exec("IDENTIFY_SYSTEM");
    if (r.rows() != 1 || r.columns() < 4)
        throw ProtocolError("IDENTIFY_SYSTEM returned an unexpected shape");
    SystemIdentity id;
    id.systemid = r.str(0, 0);
    id.timeline = std::stoi(r.str(0, 1));
    auto lsn = Lsn::parse(r.get(0, 2));
    if (!lsn)
        throw ProtocolError("IDENTIFY_SYSTEM returned an invalid xlogpos: " + r.str(0, 2));
    id.xlogpos = *lsn;
    id.dbname = r.str(0, 3);
    return id;
}

CreatedSlot ReplicationConnection::create_slot(const std::string& slot, bool export_snapshot, bool temporary)
{
    std::string sql =
        "CREATE_REPLICATION_SLOT " + quote_ident(slot) + (temporary ? " TEMPORARY" : "") + " LOGICAL pgoutput ";
    if (conn_.server_version() >= 150000)
        sql += export_snapshot ? "(SNAPSHOT 'export')" : "(SNAPSHOT 'nothing')";
    else
        sql += export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT";
    auto r = conn_.exec(sql);
    if (r.rows() != 1 || r.columns() < 4)
        throw ProtocolError("CREATE_REPLICATION_SLOT returned an unexpected shape");
    CreatedSlot s;
    s.slot_name = r.str(0, 0);
    auto lsn = Lsn::parse(r.get(0, 1));
    if (!lsn)
        throw ProtocolError("CREATE_REPLICATION_SLOT returned an invalid consistent point: " + r.str(0, 1));
    s.consistent_point = *lsn;
    s.snapshot_name = r.str(0, 2);
    return s;
}

void ReplicationConnection::start_replication(const std::string& slot, Lsn start, const std::string& options)
{
    std::string sql = "START_REPLICATION SLOT " + quote_ident(slot) + " LOGICAL " + start.str() + " " + options;
    PGresult* res = PQexec(conn_.raw(), sql.c_str());
    if (!res || PQresultStatus(res) != PGRES_COPY_BOTH)
        conn_.fail("START_REPLICATION failed", res);
    PQclear(res);
}

ReplicationConnection::RecvStatus ReplicationConnection::receive(std::string_view& out, std::chrono::milliseconds timeout)
{
    release_buffer();
    for (int attempt = 0; attempt < 2; ++attempt) {
        int n = PQgetCopyData(conn_.raw(), &buffer_, 1);
        if (n > 0) {
            out = std::string_view(buffer_, static_cast<std::size_t>(n));
            return RecvStatus::data;
        }
        if (n == -1) {
            // COPY ended by the server: collect the final result to learn why.
            PGresult* res = PQgetResult(conn_.raw());
            if (res && PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_COPY_OUT)
                conn_.fail("replication stream ended", res);
            if (res)
                PQclear(res);
            return RecvStatus::end;
        }
        if (n == -2)
            conn_.fail("replication stream read failed");
        if (attempt == 1)
            break;
        // n == 0: nothing buffered. Wait for the socket, then consume what arrived.
        pollfd pfd{PQsocket(conn_.raw()), POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
        if (rc == 0)
            return RecvStatus::timeout;
        if (rc < 0 && errno != EINTR)
            throw PgError("poll on the replication socket failed", "", true);
        if (!PQconsumeInput(conn_.raw()))
            conn_.fail("replication stream read failed");
    }
    return RecvStatus::timeout;
}

void ReplicationConnection::send(std::string_view data)
{
    if (PQputCopyData(conn_.raw(), data.data(), static_cast<int>(data.size())) != 1)
        conn_.fail("could not send to the replication stream");
    if (PQflush(conn_.raw()) != 0)
        conn_.fail("could not flush the replication stream");
}

void ReplicationConnection::finish_copy()
{
    release_buffer();
    if (PQputCopyEnd(conn_.raw(), nullptr) != 1 || PQflush(conn_.raw()) != 0)
        return; // the connection is going away anyway
    // Drain whatever the server still sends, then the results of COPY and START_REPLICATION.
    for (int i = 0; i < 100000; ++i) {
        int n = PQgetCopyData(conn_.raw(), &buffer_, 0);
        release_buffer();
        if (n < 0)
            break;
    }
    while (PGresult* res = PQgetResult(conn_.raw()))
        PQclear(res);
}

} // namespace pgshift::pg
