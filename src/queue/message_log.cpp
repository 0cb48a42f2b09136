// MessageLog: length-prefixed messages in memory, spilled to an unlinked file past a limit.
#include "pgshift/queue/message_log.hpp"

#include "pgshift/common/byte_reader.hpp"
#include "pgshift/common/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace pgshift::queue {

namespace {

constexpr std::size_t k_write_buffer = 1 << 20;
constexpr std::size_t k_read_window = 1 << 20;
constexpr std::size_t k_initial_capacity = 1024;

/// A spill file operation failed: the message names the directory (apply.spill_dir) and errno.
[[noreturn]] void fail(const std::string& what, const std::filesystem::path& dir)
{
    throw SpillError(what + " in " + dir.string() + " (apply.spill_dir): " + std::strerror(errno));
}

std::uint32_t read_u32(const char* p)
{
    auto u = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
    return (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
}

} // namespace

std::filesystem::path default_spill_dir()
{
    for (const char* var : {"STATE_DIRECTORY", "TMPDIR"})
        if (const char* v = std::getenv(var); v && *v) {
            // STATE_DIRECTORY may list several directories separated by ':'; use the first.
            std::string s(v);
            return s.substr(0, s.find(':'));
        }
    return "/var/tmp";
}

std::filesystem::path spill_dir(const std::string& configured)
{
    return configured.empty() ? default_spill_dir() : std::filesystem::path(configured);
}

std::uint64_t check_spill_dir(const std::filesystem::path& dir)
{
    MessageLog probe(dir, 0);
    probe.append("pgshift spill directory check"); // past the limit: creates and writes a file
    if (!probe.spilled())
        throw InternalError("the spill directory check did not spill");
    struct statvfs fs {};
    if (::statvfs(dir.c_str(), &fs) != 0)
        fail("could not read the free space", dir);
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
}

MessageLog::MessageLog(std::filesystem::path spill_dir, std::size_t memory_limit)
    : dir_(std::move(spill_dir)), limit_(memory_limit)
{
}

MessageLog::MessageLog(MessageLog&& o) noexcept
    : dir_(std::move(o.dir_)), limit_(o.limit_), mem_(std::move(o.mem_)), wbuf_(std::move(o.wbuf_)), fd_(o.fd_),
      size_(o.size_), file_size_(o.file_size_), count_(o.count_)
{
    o.fd_ = -1;
    o.size_ = o.file_size_ = o.count_ = 0;
}

MessageLog::~MessageLog()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void MessageLog::append(std::string_view payload)
{
    // Most transactions are small: one allocation instead of a series of doublings.
    if (fd_ < 0 && mem_.capacity() < k_initial_capacity)
        mem_.reserve(std::min(k_initial_capacity, limit_ + 1));
    std::string& out = fd_ >= 0 ? wbuf_ : mem_;
    put_be(out, payload.size(), 4);
    out.append(payload);
    size_ += 4 + payload.size();
    ++count_;
    if (fd_ < 0 && mem_.size() > limit_)
        spill();
    else if (fd_ >= 0 && wbuf_.size() >= k_write_buffer)
        write_out();
}

void MessageLog::spill()
{
    auto tmpl = (dir_ / "pgshift-spill-XXXXXX").string();
    fd_ = ::mkstemp(tmpl.data());
    if (fd_ < 0)
        fail("could not create a spill file", dir_);
    ::unlink(tmpl.c_str()); // anonymous from now on: gone with the descriptor
    wbuf_ = std::move(mem_);
    mem_ = std::string();
    write_out();
}

void MessageLog::write_out()
{
    std::size_t done = 0;
    while (done < wbuf_.size()) {
        auto n = ::pwrite(fd_, wbuf_.data() + done, wbuf_.size() - done, static_cast<off_t>(file_size_ + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("could not write the spill file", dir_);
        }
        done += static_cast<std::size_t>(n);
    }
    file_size_ += done;
    wbuf_.clear();
}

void MessageLog::seal()
{
    if (fd_ >= 0) {
        write_out();
        wbuf_.shrink_to_fit();
    }
}

void MessageLog::truncate(std::uint64_t pos)
{
    if (pos > size_)
        throw InternalError("MessageLog::truncate beyond the end");
    // Count the messages that go away.
    std::uint64_t dropped = 0;
    {
        seal();
        Cursor c(*this);
        std::string_view p;
        while (c.position() < pos && c.next(p)) {
        }
        while (c.next(p))
            ++dropped;
    }
    if (fd_ >= 0) {
        if (::ftruncate(fd_, static_cast<off_t>(pos)) != 0)
            fail("could not truncate the spill file", dir_);
        file_size_ = pos;
    } else {
        mem_.resize(pos);
    }
    size_ = pos;
    count_ -= dropped;
}

void MessageLog::read_at(std::uint64_t pos, char* dst, std::size_t n) const
{
    std::size_t done = 0;
    while (done < n) {
        auto r = ::pread(fd_, dst + done, n - done, static_cast<off_t>(pos + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail("could not read the spill file (short read)", dir_);
        done += static_cast<std::size_t>(r);
    }
}

MessageLog::Cursor::Cursor(const MessageLog& log) : log_(log) {}

bool MessageLog::Cursor::next(std::string_view& payload)
{
    if (pos_ >= log_.size_)
        return false;
    if (log_.fd_ < 0) {
        auto len = read_u32(log_.mem_.data() + pos_);
        payload = std::string_view(log_.mem_.data() + pos_ + 4, len);
        pos_ += 4 + len;
        return true;
    }
    // File mode: serve from a window, refilled when the next message does not fit in it.
    auto in_window = [&](std::uint64_t p, std::size_t n) {
        return p >= buf_start_ && p + n <= buf_start_ + buf_.size();
    };
    auto refill = [&](std::uint64_t p) {
        auto n = static_cast<std::size_t>(std::min<std::uint64_t>(k_read_window, log_.file_size_ - p));
        buf_.resize(n);
        log_.read_at(p, buf_.data(), n);
        buf_start_ = p;
    };
    if (!in_window(pos_, 4))
        refill(pos_);
    if (!in_window(pos_, 4))
        throw InternalError("spill file ends inside a length prefix");
    auto len = read_u32(buf_.data() + (pos_ - buf_start_));
    if (pos_ + 4 + len > log_.file_size_)
        throw InternalError("spill file ends inside a message");
    if (!in_window(pos_ + 4, len)) {
        if (len + 4 > k_read_window) {
            big_.resize(len);
            log_.read_at(pos_ + 4, big_.data(), len);
            payload = big_;
            pos_ += 4 + len;
            return true;
        }
        refill(pos_);
    }
    payload = std::string_view(buf_.data() + (pos_ + 4 - buf_start_), len);
    pos_ += 4 + len;
    return true;
}

} // namespace pgshift::queue
