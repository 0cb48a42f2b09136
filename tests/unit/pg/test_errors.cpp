// Which PostgreSQL errors end a session for a retry, and which stop apply for the operator.
#include "pgshift/pg/connection.hpp"

#include <catch2/catch.hpp>

using pgshift::pg::PgError;

TEST_CASE("pg: connection trouble and shutdowns are retried", "[unit][pg]")
{
    for (const char* state : {"08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "55006"}) {
        INFO(state);
        CHECK(PgError("x", state, false).retryable());
    }
}

TEST_CASE("pg: an error libpq raised itself (no SQLSTATE) is retried", "[unit][pg]")
{
    // e.g. "pipeline sync missing" or "server closed the connection unexpectedly" read before
    // libpq marked the connection bad: a new session is safe, blocking for an operator is not needed.
    CHECK(PgError("pipeline sync missing", "", false).retryable());
    CHECK(PgError("could not connect", "", true).retryable());
}

TEST_CASE("pg: data and schema errors stop apply instead of looping", "[unit][pg]")
{
    for (const char* state : {"23505", "23503", "42703", "42P01", "22P02", "42501"}) {
        INFO(state);
        CHECK_FALSE(PgError("x", state, false).retryable());
    }
    // ... unless the session is gone anyway.
    CHECK(PgError("x", "23505", true).retryable());
}
