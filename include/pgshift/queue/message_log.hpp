// The pgoutput messages of one transaction, length-prefixed, in memory or spilled to a file.
//
// Design notes
// - A log starts in memory and moves to a spill file once it holds more than its memory limit;
//   from then on appends are buffered writes, so a transaction of any size costs a bounded
//   amount of memory (the limit plus one write buffer).
// - Spill files are created in the spill directory and unlinked at once: they disappear when
//   the log is destroyed or the process dies, and never outlive the data they hold.
// - truncate() cuts the log back to an earlier position (a rolled-back subtransaction of a
//   streamed transaction). Readers see the log only after seal().
// - Single-threaded: the reader thread fills a log, then hands it over (with its transaction)
//   to the apply thread, which only reads it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace pgshift::queue {

class MessageLog {
public:
    MessageLog(std::filesystem::path spill_dir, std::size_t memory_limit);
    ~MessageLog();
    MessageLog(MessageLog&& other) noexcept;
    MessageLog& operator=(MessageLog&&) = delete;
    MessageLog(const MessageLog&) = delete;

    /// Appends one message. Throws InternalError when the spill file cannot be written.
    void append(std::string_view payload);
    /// Logical end position (bytes written so far, prefixes included).
    [[nodiscard]] std::uint64_t position() const { return size_; }
    /// Drops everything after `pos`, a value position() returned earlier.
    void truncate(std::uint64_t pos);
    /// Flushes buffered writes; call before reading.
    void seal();

    [[nodiscard]] std::uint64_t count() const { return count_; }
    [[nodiscard]] bool spilled() const { return fd_ >= 0; }
    /// Memory held (in-memory messages and write buffer).
    [[nodiscard]] std::size_t memory_bytes() const { return mem_.capacity() + wbuf_.capacity(); }

    /// Sequential reader over a sealed log; views are valid until the next call to next().
    class Cursor {
    public:
        explicit Cursor(const MessageLog& log);
        /// False at the end. Throws InternalError on a short read.
        [[nodiscard]] bool next(std::string_view& payload);
        /// The position of the message next() returns next.
        [[nodiscard]] std::uint64_t position() const { return pos_; }

    private:
        const MessageLog& log_;
        std::uint64_t pos_ = 0;
        std::string buf_;          ///< file mode: a window of the file
        std::uint64_t buf_start_ = 0;
        std::string big_;          ///< file mode: a message larger than the window
    };
    [[nodiscard]] Cursor cursor() const { return Cursor(*this); }

private:
    void spill();
    void write_out();
    void read_at(std::uint64_t pos, char* dst, std::size_t n) const;

    std::filesystem::path dir_;
    std::size_t limit_;
    std::string mem_;   ///< in-memory mode: the messages
    std::string wbuf_;  ///< file mode: pending writes
    int fd_ = -1;
    std::uint64_t size_ = 0;   ///< logical size
    std::uint64_t file_size_ = 0; ///< bytes written to the file
    std::uint64_t count_ = 0;
};

/// The directory for spill files: $STATE_DIRECTORY (set by systemd) when set, else $TMPDIR,
/// else /var/tmp.
[[nodiscard]] std::filesystem::path default_spill_dir();

/// The spill directory to use: `configured` (apply.spill_dir) when set, else default_spill_dir().
[[nodiscard]] std::filesystem::path spill_dir(const std::string& configured);

/// Checks that a spill file can be created and written in `dir`; throws SpillError naming the
/// directory and the reason otherwise. Returns the free bytes there.
std::uint64_t check_spill_dir(const std::filesystem::path& dir);

} // namespace pgshift::queue
