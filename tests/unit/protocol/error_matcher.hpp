// Catch2 matcher applying a string matcher to a ProtocolError's message, plus a check macro.
#pragma once

#include "pgshift/common/errors.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace pgshift::protocol::test {

template <typename StringMatcher>
class WhatMatcher : public Catch::MatcherBase<ProtocolError> {
public:
    explicit WhatMatcher(StringMatcher m) : inner_(std::move(m)) {}
    bool match(const ProtocolError& e) const override { return inner_.match(std::string(e.what())); }
    std::string describe() const override { return "message " + inner_.toString(); }

private:
    StringMatcher inner_;
};

template <typename StringMatcher>
WhatMatcher<StringMatcher> what(StringMatcher m)
{
    return WhatMatcher<StringMatcher>(std::move(m));
}

} // namespace pgshift::protocol::test

/// Checks that `expr` throws a ProtocolError whose message satisfies the string matcher.
#define CHECK_PROTOCOL_ERROR(expr, string_matcher)                                                                     \
    CHECK_THROWS_MATCHES(expr, ::pgshift::ProtocolError, ::pgshift::protocol::test::what(string_matcher))
