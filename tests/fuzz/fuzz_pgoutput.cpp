// libFuzzer target for the pure wire decoders: pgoutput messages, CopyBoth server frames, standby status.
//
// Design notes
// - Input layout: byte 0 selects the DecodeContext, the rest is the bytes under test.
//     bits 0-1: proto_version - 1 (1..4), bit 2: in_stream, bit 3: parallel_stream; bits 4-7 ignored.
//   make_corpus.sh writes seeds in this layout (see there).
// - The rest is offered to every decoder: protocol::decode, decode_server_frame (and decode of
//   an XLogData payload under the same context), decode_standby_status. A frame that is not
//   of a decoder's type is just a ProtocolError for that decoder, so one input feeds all three.
// - ProtocolError is the only accepted failure. Any other exception escapes and libFuzzer reports
//   it as a crash (uncaught exception -> abort), as do sanitizer reports and failed invariants.
// - The bytes are copied into an allocation of exactly their size, so ASan sees any read past the
//   end of the message instead of into libFuzzer's own buffer.
#include "pgshift/common/errors.hpp"
#include "pgshift/protocol/frames.hpp"
#include "pgshift/protocol/pgoutput.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <type_traits>
#include <variant>

namespace pgshift::test {
namespace {

[[noreturn]] void invariant_failed(const char* what)
{
    std::fprintf(stderr, "fuzz_pgoutput: invariant failed: %s\n", what);
    std::abort();
}

protocol::DecodeContext context_from(std::uint8_t selector)
{
    protocol::DecodeContext ctx;
    ctx.proto_version = 1 + (selector & 3);
    ctx.in_stream = (selector & 4) != 0;
    ctx.parallel_stream = (selector & 8) != 0;
    return ctx;
}

/// Every view a decoded message holds must point into the payload it was decoded from.
void check_view(std::string_view v, std::string_view payload)
{
    if (v.empty())
        return;
    if (v.data() < payload.data() || v.data() + v.size() > payload.data() + payload.size())
        invariant_failed("a decoded view points outside the payload");
}

void check_tuple(const protocol::TupleData& t, std::string_view payload)
{
    for (const auto& c : t.columns) {
        check_view(c.data, payload);
        bool has_value = c.kind == protocol::ColumnKind::text || c.kind == protocol::ColumnKind::binary;
        if (!has_value && !c.data.empty())
            invariant_failed("a null/unchanged column carries bytes");
    }
}

void check_message(const protocol::Message& m, std::string_view payload, const protocol::DecodeContext& ctx)
{
    using namespace protocol;
    if (static_cast<char>(type_of(m)) != payload.front())
        invariant_failed("type_of() differs from the type byte");
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (requires { v.xid.has_value(); }) {
                if (v.xid.has_value() != ctx.in_stream)
                    invariant_failed("xid prefix presence differs from in_stream");
            }
            if constexpr (std::is_same_v<T, Origin>) {
                check_view(v.name, payload);
            } else if constexpr (std::is_same_v<T, Relation>) {
                check_view(v.nspname, payload);
                check_view(v.relname, payload);
                for (const auto& c : v.columns)
                    check_view(c.name, payload);
            } else if constexpr (std::is_same_v<T, Type>) {
                check_view(v.nspname, payload);
                check_view(v.typname, payload);
            } else if constexpr (std::is_same_v<T, Insert>) {
                check_tuple(v.new_tuple, payload);
            } else if constexpr (std::is_same_v<T, Update>) {
                if (v.old_kind == OldKind::none && !v.old_tuple.columns.empty())
                    invariant_failed("Update without an old tuple marker has old columns");
                check_tuple(v.old_tuple, payload);
                check_tuple(v.new_tuple, payload);
            } else if constexpr (std::is_same_v<T, Delete>) {
                if (v.old_kind == OldKind::none)
                    invariant_failed("Delete without an old tuple");
                check_tuple(v.old_tuple, payload);
            } else if constexpr (std::is_same_v<T, LogicalMessage>) {
                check_view(v.prefix, payload);
                check_view(v.content, payload);
            } else if constexpr (std::is_same_v<T, StreamAbort>) {
                bool parallel = ctx.proto_version >= 4 && ctx.parallel_stream;
                if (v.abort_lsn.has_value() != parallel || v.abort_ts.has_value() != parallel)
                    invariant_failed("Stream Abort position presence differs from the context");
            } else if constexpr (std::is_same_v<T, BeginPrepare> || std::is_same_v<T, Prepare> ||
                                 std::is_same_v<T, CommitPrepared> || std::is_same_v<T, RollbackPrepared>) {
                check_view(v.gid, payload);
            }
        },
        m);
}

void fuzz_decode(std::string_view payload, const protocol::DecodeContext& ctx)
{
    try {
        auto m = protocol::decode(payload, ctx);
        check_message(m, payload, ctx);
    } catch (const ProtocolError&) {
        // Expected for malformed input.
    }
}

void fuzz_server_frame(std::string_view data, const protocol::DecodeContext& ctx)
{
    try {
        auto frame = protocol::decode_server_frame(data);
        if (auto* x = std::get_if<protocol::XLogData>(&frame)) {
            check_view(x->payload, data);
            if (x->payload.empty())
                invariant_failed("XLogData with an empty payload");
            fuzz_decode(x->payload, ctx);
        }
    } catch (const ProtocolError&) {
    }
}

void fuzz_standby_status(std::string_view data)
{
    try {
        auto s = protocol::decode_standby_status(data);
        // The layout is fixed and the bool is strict, so a decoded status re-encodes byte for byte.
        if (protocol::encode_standby_status(s) != data)
            invariant_failed("standby status does not round-trip");
    } catch (const ProtocolError&) {
    }
}

} // namespace
} // namespace pgshift::test

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace pgshift::test;
    if (size == 0)
        return 0;
    auto ctx = context_from(data[0]);
    std::size_t n = size - 1;
    // Exactly n bytes (new char[0] is a valid, unreadable allocation), so overruns hit the redzone.
    std::unique_ptr<char[]> copy(new char[n]);
    for (std::size_t i = 0; i < n; ++i)
        copy[i] = static_cast<char>(data[1 + i]);
    std::string_view bytes(copy.get(), n);

    fuzz_decode(bytes, ctx);
    fuzz_server_frame(bytes, ctx);
    fuzz_standby_status(bytes);
    return 0;
}
