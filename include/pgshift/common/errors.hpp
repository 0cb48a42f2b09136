// Exception hierarchy: the category of an error decides the policy (reconnect or stop).
//
// Exceptions mean "this stream or operation cannot continue". Expected outcomes
// (need more data, retryable SQLSTATE, queue full) are return values instead.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace pgshift {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Malformed or unexpected bytes from a server. Stops the stream; never guessed around.
class ProtocolError : public Error {
public:
    using Error::Error;
};

/// Invalid configuration (exit code 78).
class ConfigError : public Error {
public:
    using Error::Error;
};

/// Trouble with the source server. `retryable` is true for connection loss and the like.
class SourceError : public Error {
public:
    SourceError(const std::string& what, bool retryable) : Error(what), retryable_(retryable) {}
    [[nodiscard]] bool retryable() const { return retryable_; }

private:
    bool retryable_;
};

/// The rule a row broke on a server, from the error's fields: a not-null (23502), foreign-key
/// (23503), unique (23505), check (23514) or exclusion (23P01) violation.
struct RuleViolation {
    std::string sqlstate;      ///< a 23xxx integrity violation, or 22P02 for an enum value the type lacks
    std::string schema, table; ///< the table the rule belongs to
    std::string constraint;    ///< the constraint's or unique index's name (empty for not-null)
    std::string column;        ///< for a not-null violation
};

/// Trouble with the target server. `retryable` is true for connection loss and the like.
class TargetError : public Error {
public:
    TargetError(const std::string& what, bool retryable, std::optional<RuleViolation> violation = std::nullopt)
        : Error(what), retryable_(retryable), violation_(std::move(violation))
    {
    }
    [[nodiscard]] bool retryable() const { return retryable_; }
    /// The target rejected a row for this rule.
    [[nodiscard]] const std::optional<RuleViolation>& violation() const { return violation_; }

private:
    bool retryable_;
    std::optional<RuleViolation> violation_;
};

/// The local spill directory cannot take a transaction (disk full, removed, no permission).
/// Nothing is lost (the slot still holds the transaction): the session ends and a new one is
/// tried after a backoff, so freeing space lets pgshift continue without a restart.
class SpillError : public Error {
public:
    using Error::Error;
};

/// A broken invariant of ours.
class InternalError : public Error {
public:
    using Error::Error;
};

} // namespace pgshift
