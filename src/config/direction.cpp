// The reverse direction's configuration (see Config::reversed()).
#include "pgshift/config/config.hpp"

#include <string_view>
#include <utility>

namespace pgshift::config {

Config Config::reversed() const
{
    Config r = *this;
    std::swap(r.source, r.target);
    r.object_suffix = is_reverse() ? "" : "_rev";
    // The data is on both servers already; whatever the file says, a reverse session never copies.
    r.initial_copy.enabled = is_reverse() ? initial_copy.enabled : false;
    return r;
}

bool Config::is_own_origin(std::string_view origin) const
{
    std::string_view rest = origin;
    auto eat = [&rest](std::string_view prefix) {
        if (rest.substr(0, prefix.size()) != prefix)
            return false;
        rest.remove_prefix(prefix.size());
        return true;
    };
    if (!eat("pgshift_") || !eat(name))
        return false;
    eat("_rev");
    if (!eat("_w") || rest.empty())
        return false;
    return rest.find_first_not_of("0123456789") == std::string_view::npos;
}

} // namespace pgshift::config
