// Test helpers: load golden pgoutput captures and build wire bytes by hand.
#pragma once

#include "pgshift/protocol/pgoutput.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgshift::protocol::test {

/// One captured message with the decode context it must be decoded under.
struct GoldenMessage {
    std::string file;
    std::size_t line = 0; ///< 1-based line in the file, for failure messages
    std::string bytes;    ///< the raw pgoutput payload
    DecodeContext ctx;
};

/// A golden capture file and the proto_version it was captured with.
struct GoldenFile {
    const char* name;
    int proto_version;
};

/// Every capture under PGSHIFT_GOLDEN_DIR.
const std::vector<GoldenFile>& golden_files();

/// Reads one capture: hex lines, '#' comments. Tracks Stream Start/Stop across lines so each
/// message carries the in_stream flag a live reader would have had at that point.
std::vector<GoldenMessage> load_golden(const GoldenFile& f);

/// All messages of all captures.
std::vector<GoldenMessage> load_all_golden();

/// Decodes every message of a loaded capture. The result points into `msgs`, which must
/// outlive it and must not be modified meanwhile.
std::vector<Message> decode_all(const std::vector<GoldenMessage>& msgs);

/// Hex to bytes; throws std::invalid_argument on bad input.
std::string unhex(std::string_view hex);

/// A tuple in a compact comparable form: "t:alice", "b:0000000c" (hex), "n", "u".
std::vector<std::string> describe(const TupleData& t);

/// Builds wire bytes for hand-made messages and frames.
class WireBuilder {
public:
    WireBuilder& u8(std::uint8_t v);
    WireBuilder& i16(std::int16_t v);
    WireBuilder& i32(std::int32_t v);
    WireBuilder& u32(std::uint32_t v);
    WireBuilder& i64(std::int64_t v);
    WireBuilder& u64(std::uint64_t v);
    WireBuilder& cstr(std::string_view s); ///< with its NUL terminator
    WireBuilder& raw(std::string_view s);
    [[nodiscard]] const std::string& str() const { return out_; }

private:
    std::string out_;
};

} // namespace pgshift::protocol::test
