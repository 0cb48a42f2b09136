// UTF-8 validation for text that leaves pgshift as JSON (HTTP replies, JSON log lines).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgshift {

/// Length of the well-formed UTF-8 sequence at the start of `s` (Unicode table 3-7: no
/// overlong forms, no surrogates, nothing past U+10FFFF), or 0 if there is none.
[[nodiscard]] std::size_t utf8_sequence_length(std::string_view s);

/// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD.
/// Request targets, server messages in another encoding and file names may hold any bytes;
/// JSON must not.
[[nodiscard]] std::string valid_utf8(std::string_view s);

} // namespace pgshift
