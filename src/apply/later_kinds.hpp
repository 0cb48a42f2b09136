// The kinds of difference schema_differences() compares besides indexes and constraints, one
// function each (later_objects.hpp says what each one is and why it matters). Internal to apply.
#pragma once

#include "pgshift/apply/later_objects.hpp"

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace pgshift::apply::later {

/// What one comparison covers: both servers (each in compare()'s read transaction), the source
/// tables ($1 of tables_from()), the SQL names of those the target has, their display names.
struct Scope {
    pg::Connection& source;
    pg::Connection& target;
    bool publication;                                  ///< $1 is a publication's name, else a text[] of tables
    const std::string& tables_param;
    const std::set<std::string>& tables;               ///< quoted "schema"."table" names the target has
    const std::map<std::string, std::string>& display; ///< quoted name -> "schema.table"
};

/// The parts of a string_agg(x, chr(1)): how the comparison's queries return names and labels
/// that may hold any other character.
inline std::vector<std::string> split_chr1(const std::string& joined)
{
    std::vector<std::string> out;
    std::istringstream in(joined);
    for (std::string part; std::getline(in, part, '\x01');)
        out.push_back(std::move(part));
    return out;
}

/// The FROM clause of the source tables compared: those of a publication ($1 its name), or a
/// list ($1 a text[] of qualified names). Joined as `t`.
std::string tables_from(bool publication);

std::vector<LaterObject> privileges_missing(const Scope& s);   // later_access.cpp
std::vector<LaterObject> row_security_differs(const Scope& s); // later_access.cpp
std::vector<LaterObject> owners_differ(const Scope& s);        // later_access.cpp
std::vector<LaterObject> routine_privileges_differ(const Scope& s); // later_access.cpp
std::vector<LaterObject> default_privileges_differ(const Scope& s); // later_access.cpp
std::vector<LaterObject> routines_missing(const Scope& s);     // later_definitions.cpp, and below
std::vector<LaterObject> partitions_missing(const Scope& s);
std::vector<LaterObject> partitions_gone(const Scope& s);
std::vector<LaterObject> enum_values_missing(const Scope& s);
std::vector<LaterObject> triggers_differ(const Scope& s);
std::vector<LaterObject> statistics_missing(const Scope& s);
/// Only for a publication (the target's records are per slot, named as the publication).
std::vector<LaterObject> renamed_unwritten(const Scope& s);

} // namespace pgshift::apply::later
