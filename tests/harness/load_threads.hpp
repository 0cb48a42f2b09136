// Writer threads for integration tests: each runs a loop body until stopped. The destructor stops
// and joins them, so a failing REQUIRE on the main thread never leaves a joinable thread behind;
// an exception that ends a body is kept as that thread's error.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pgshift::test {

class LoadThreads {
public:
    /// Starts `threads` threads running `body(k, stop)`; a body returns soon after `stop` is set.
    LoadThreads(int threads, std::function<void(int, const std::atomic<bool>&)> body) : body_(std::move(body))
    {
        for (int k = 0; k < threads; ++k)
            threads_.emplace_back([this, k] {
                try {
                    body_(k, stop_);
                } catch (const std::exception& e) {
                    std::lock_guard lk(mutex_);
                    errors_ += "thread " + std::to_string(k) + ": " + e.what() + "\n";
                }
            });
    }
    LoadThreads(const LoadThreads&) = delete;
    LoadThreads& operator=(const LoadThreads&) = delete;
    ~LoadThreads() { stop(); }

    void stop()
    {
        stop_ = true;
        for (auto& t : threads_)
            if (t.joinable())
                t.join();
    }
    [[nodiscard]] bool stopping() const { return stop_.load(); }
    /// The errors that ended threads, one line each ("" when none).
    [[nodiscard]] std::string errors() const
    {
        std::lock_guard lk(mutex_);
        return errors_;
    }

private:
    std::function<void(int, const std::atomic<bool>&)> body_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mutex_;
    std::string errors_; // guarded by mutex_
    std::vector<std::thread> threads_;
};

} // namespace pgshift::test
