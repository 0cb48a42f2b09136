// Bounds-checked big-endian reader over a byte buffer; every overrun is a ProtocolError.
#pragma once

#include "pgshift/common/errors.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgshift {

/// Reads network-order integers and strings from a buffer it does not own.
/// Views returned by read_* point into that buffer and live as long as it does.
class ByteReader {
public:
    explicit ByteReader(std::string_view data) : data_(data) {}

    [[nodiscard]] std::size_t offset() const { return pos_; }
    [[nodiscard]] std::size_t remaining() const { return data_.size() - pos_; }
    [[nodiscard]] bool at_end() const { return pos_ == data_.size(); }

    std::uint8_t read_u8(const char* what) {
        need(1, what);
        return static_cast<std::uint8_t>(data_[pos_++]);
    }
    std::uint16_t read_u16(const char* what) { return static_cast<std::uint16_t>(read_be(2, what)); }
    std::int16_t read_i16(const char* what) { return static_cast<std::int16_t>(read_be(2, what)); }
    std::uint32_t read_u32(const char* what) { return static_cast<std::uint32_t>(read_be(4, what)); }
    std::int32_t read_i32(const char* what) { return static_cast<std::int32_t>(read_be(4, what)); }
    std::uint64_t read_u64(const char* what) { return read_be(8, what); }
    std::int64_t read_i64(const char* what) { return static_cast<std::int64_t>(read_be(8, what)); }

    /// `n` raw bytes.
    std::string_view read_bytes(std::size_t n, const char* what) {
        need(n, what);
        auto v = data_.substr(pos_, n);
        pos_ += n;
        return v;
    }

    /// A NUL-terminated string (the terminator is consumed, not returned).
    std::string_view read_cstring(const char* what) {
        auto end = data_.find('\0', pos_);
        if (end == std::string_view::npos)
            fail(what, "unterminated string");
        auto v = data_.substr(pos_, end - pos_);
        pos_ = end + 1;
        return v;
    }

    /// Throws unless every byte was consumed.
    void expect_end(const char* what) const {
        if (!at_end())
            fail(what, std::to_string(remaining()) + " trailing bytes");
    }

    [[noreturn]] void fail(const char* what, const std::string& why) const {
        throw ProtocolError(std::string(what) + ": " + why + " at offset " + std::to_string(pos_) + " of " +
                            std::to_string(data_.size()));
    }

private:
    void need(std::size_t n, const char* what) const {
        if (remaining() < n)
            fail(what, "truncated (need " + std::to_string(n) + " bytes, have " + std::to_string(remaining()) + ")");
    }

    std::uint64_t read_be(std::size_t n, const char* what) {
        need(n, what);
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i)
            v = (v << 8) | static_cast<std::uint8_t>(data_[pos_ + i]);
        pos_ += n;
        return v;
    }

    std::string_view data_;
    std::size_t pos_ = 0;
};

/// Renders a wire byte for an error message: 'x' (0x78), or just 0x05 when unprintable.
inline std::string describe_byte(std::uint8_t b)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string code = {'0', 'x', hex[b >> 4], hex[b & 0xf]};
    if (b >= 0x20 && b < 0x7f)
        return std::string("'") + static_cast<char>(b) + "' (" + code + ")";
    return code;
}

/// Appends big-endian integers to a buffer (for messages we send).
inline void put_be(std::string& out, std::uint64_t v, std::size_t n) {
    for (std::size_t i = n; i-- > 0;)
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

} // namespace pgshift
