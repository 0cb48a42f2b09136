// Sequence state copied to the new primary (see sequences.hpp).
#include "pgshift/cutover/sequences.hpp"

#include <algorithm>

namespace pgshift::cutover {

namespace {
constexpr std::size_t k_chunk = 500;
}

int sync_sequences(pg::Connection& from, pg::Connection& to, const std::vector<std::string>& schemas,
                   std::vector<std::string>& missing)
{
    auto list = from.exec_params("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE c.relkind = 'S' AND n.nspname = ANY($1::text[]) ORDER BY 1",
                                 {pg::text_array(schemas)});
    std::vector<std::string> names;
    for (int i = 0; i < list.rows(); ++i)
        names.push_back(list.str(i, 0));
    int set = 0;
    for (std::size_t at = 0; at < names.size(); at += k_chunk) {
        auto end = std::min(names.size(), at + k_chunk);
        // Each sequence's own row (last_value, is_called): exact, whatever setval made of it.
        std::string q;
        for (auto i = at; i < end; ++i)
            q += std::string(q.empty() ? "" : " UNION ALL ") + "SELECT " + pg::quote_literal(names[i]) +
                 ", last_value, is_called FROM " + names[i];
        auto v = from.exec(q);
        std::vector<std::string> n, val, called;
        for (int i = 0; i < v.rows(); ++i) {
            n.push_back(v.str(i, 0));
            val.push_back(v.str(i, 1));
            called.push_back(v.get(i, 2) == "t" ? "true" : "false");
        }
        auto r = to.exec_params("SELECT s.name, to_regclass(s.name) IS NOT NULL AND "
                                "  setval(to_regclass(s.name), s.v, s.c) IS NOT NULL "
                                "FROM unnest($1::text[], $2::bigint[], $3::boolean[]) s(name, v, c)",
                                {pg::text_array(n), pg::text_array(val), pg::text_array(called)});
        for (int i = 0; i < r.rows(); ++i) {
            if (r.get(i, 1) == "t")
                ++set;
            else
                missing.push_back(r.str(i, 0));
        }
    }
    return set;
}

} // namespace pgshift::cutover
