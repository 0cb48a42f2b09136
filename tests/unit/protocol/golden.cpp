// Test helpers: golden capture loading, hex decoding and a byte builder for hand-made messages.
#include "golden.hpp"

#include "pgshift/common/byte_reader.hpp"

#include <fstream>
#include <stdexcept>

#ifndef PGSHIFT_GOLDEN_DIR
#error "PGSHIFT_GOLDEN_DIR must name the directory holding the golden captures"
#endif

namespace pgshift::protocol::test {

const std::vector<GoldenFile>& golden_files()
{
    static const std::vector<GoldenFile> files = {
        {"dml_pk_v1.hex", 1},      {"replica_identity_v1.hex", 1}, {"toast_unchanged_v1.hex", 1},
        {"types_v1.hex", 1},       {"truncate_v1.hex", 1},         {"messages_v1.hex", 1},
        {"origin_v1.hex", 1},      {"binary_v1.hex", 1},           {"stream_v2.hex", 2},
    };
    return files;
}

std::string unhex(std::string_view hex)
{
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        throw std::invalid_argument("bad hex digit");
    };
    if (hex.size() % 2 != 0)
        throw std::invalid_argument("odd hex length");
    std::string out;
    out.reserve(hex.size() / 2);
    for (std::size_t i = 0; i < hex.size(); i += 2)
        out.push_back(static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1])));
    return out;
}

std::vector<GoldenMessage> load_golden(const GoldenFile& f)
{
    std::string path = std::string(PGSHIFT_GOLDEN_DIR) + "/" + f.name;
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error("cannot open golden file " + path);
    std::vector<GoldenMessage> out;
    bool in_stream = false;
    std::string line;
    for (std::size_t lineno = 1; std::getline(in, line); ++lineno) {
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line.empty() || line[0] == '#')
            continue;
        GoldenMessage m;
        m.file = f.name;
        m.line = lineno;
        m.bytes = unhex(line);
        m.ctx.proto_version = f.proto_version;
        m.ctx.in_stream = in_stream;
        // Stream Start opens a block for the messages after it, Stream Stop closes it.
        if (m.bytes.front() == static_cast<char>(MsgType::stream_start))
            in_stream = true;
        else if (m.bytes.front() == static_cast<char>(MsgType::stream_stop))
            in_stream = false;
        out.push_back(std::move(m));
    }
    return out;
}

std::vector<GoldenMessage> load_all_golden()
{
    std::vector<GoldenMessage> all;
    for (const auto& f : golden_files()) {
        auto msgs = load_golden(f);
        all.insert(all.end(), std::make_move_iterator(msgs.begin()), std::make_move_iterator(msgs.end()));
    }
    return all;
}

std::vector<Message> decode_all(const std::vector<GoldenMessage>& msgs)
{
    std::vector<Message> out;
    out.reserve(msgs.size());
    for (const auto& m : msgs)
        out.push_back(decode(m.bytes, m.ctx));
    return out;
}

std::vector<std::string> describe(const TupleData& t)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::vector<std::string> out;
    for (const auto& c : t.columns) {
        switch (c.kind) {
        case ColumnKind::null:
            out.emplace_back("n");
            break;
        case ColumnKind::unchanged_toast:
            out.emplace_back("u");
            break;
        case ColumnKind::text:
            out.push_back("t:" + std::string(c.data));
            break;
        case ColumnKind::binary: {
            std::string s = "b:";
            for (unsigned char b : c.data) {
                s.push_back(digits[b >> 4]);
                s.push_back(digits[b & 15]);
            }
            out.push_back(std::move(s));
            break;
        }
        }
    }
    return out;
}

WireBuilder& WireBuilder::u8(std::uint8_t v)
{
    out_.push_back(static_cast<char>(v));
    return *this;
}
WireBuilder& WireBuilder::i16(std::int16_t v)
{
    put_be(out_, static_cast<std::uint16_t>(v), 2);
    return *this;
}
WireBuilder& WireBuilder::i32(std::int32_t v)
{
    put_be(out_, static_cast<std::uint32_t>(v), 4);
    return *this;
}
WireBuilder& WireBuilder::u32(std::uint32_t v)
{
    put_be(out_, v, 4);
    return *this;
}
WireBuilder& WireBuilder::i64(std::int64_t v)
{
    put_be(out_, static_cast<std::uint64_t>(v), 8);
    return *this;
}
WireBuilder& WireBuilder::u64(std::uint64_t v)
{
    put_be(out_, v, 8);
    return *this;
}
WireBuilder& WireBuilder::cstr(std::string_view s)
{
    out_.append(s);
    out_.push_back('\0');
    return *this;
}
WireBuilder& WireBuilder::raw(std::string_view s)
{
    out_.append(s);
    return *this;
}

} // namespace pgshift::protocol::test
