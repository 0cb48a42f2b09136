// A walsender connection (replication=database) in CopyBoth mode: commands, frame I/O, polling.
//
// Owned by the reader thread only. Reads never block indefinitely: receive() waits on the
// socket for at most the given timeout so the caller can keep sending status updates.
#pragma once

#include "pgshift/common/lsn.hpp"
#include "pgshift/pg/connection.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace pgshift::pg {

struct SystemIdentity {
    std::string systemid;
    int timeline = 0;
    Lsn xlogpos;
    std::string dbname;
};

struct CreatedSlot {
    std::string slot_name;
    Lsn consistent_point;
    std::string snapshot_name; ///< empty unless a snapshot was exported
};

class ReplicationConnection {
public:
    /// `conninfo` is the ordinary conninfo; replication=database is added here.
    ReplicationConnection(const std::string& conninfo, const std::string& application_name);

    SystemIdentity identify_system();
    /// CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput, with the syntax the server
    /// version takes. A temporary slot is dropped when this session ends.
    CreatedSlot create_slot(const std::string& slot, bool export_snapshot, bool temporary = false);
    /// START_REPLICATION SLOT ... LOGICAL start (options). `options` is the raw "(k 'v', ...)" list.
    void start_replication(const std::string& slot, Lsn start, const std::string& options);

    enum class RecvStatus { data, timeout, end };
    /// Waits up to `timeout` for one CopyData message; on `data`, `out` views the buffer,
    /// valid until the next call. `end` means the server ended the COPY. Throws PgError.
    [[nodiscard]] RecvStatus receive(std::string_view& out, std::chrono::milliseconds timeout);
    /// Sends one CopyData message and flushes. Throws PgError.
    void send(std::string_view data);
    /// Ends the COPY from our side and drains the server's remaining messages (graceful stop).
    void finish_copy();

    [[nodiscard]] Connection& conn() { return conn_; }

private:
    Connection conn_;
    char* buffer_ = nullptr; ///< owned libpq buffer from the last PQgetCopyData
    void release_buffer();

public:
    ~ReplicationConnection();
    ReplicationConnection(const ReplicationConnection&) = delete;
    ReplicationConnection& operator=(const ReplicationConnection&) = delete;
};

} // namespace pgshift::pg
