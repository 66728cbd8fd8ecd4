// `--stats`: where the loop thread's CPU time goes, stage by stage, so the stages add up to the thread's CPU time.
//
// Stages nest (a request head parsed inside a read callback starts the app's Task, whose eager first step calls
// send(), which writes): the clock keeps a stack and charges every nanosecond to the innermost stage running, so
// the per-stage times are exclusive and their sum is the time spent inside instrumented code. What remains of the
// thread's CPU time (CLOCK_THREAD_CPUTIME_ID, read when the clock is enabled and when it is read) is the loop's own
// work: epoll and the read system calls inside libuv, uvloop's handles, asyncio's Task stepping, timers.
//
// Stage times are CLOCK_MONOTONIC (a vDSO call, ~20 ns; CPU clocks are system calls): on a core of its own the loop
// thread is not preempted while it runs, so wall time inside a stage is its CPU time. Off (the default) each stage
// costs one predictable branch.
//
// One clock per process (`stage_clock()`), used from the loop thread only (the GIL or the libuv callback).
#pragma once

#include <cstdint>

namespace fa {

enum Stage : int {
  kStageParse,       // read callback: llhttp and request-head processing (the read system call itself is loop)
  kStageRoute,       // the native route table lookup
  kStageNative,      // a native handler and its response
  kStageScope,       // building the ASGI scope
  kStageTaskStart,   // creating the request's Task (without an eager first step's app time)
  kStageApp,         // the app's own Python code: every step of its coroutine
  kStageRouteIndex,  // the Starlette route index lookup (inside the app's routing)
  kStageSend,        // send(): ASGI message to HTTP bytes in the output buffer
  kStageReceive,     // receive()
  kStageWrite,       // the write system call (uv_try_write / uv_write)
  kStageCount
};

const char* stage_name(int stage);   // "parse", "route", ...
const char* stage_label(int stage);  // "read + parse (native)", ...

class StageClock {
 public:
  bool enabled() const { return enabled_; }
  // Starts (or restarts) the accounting: counters zeroed, the thread's CPU clock read.
  void enable();

  void enter(int stage);
  void leave();

  std::uint64_t ns(int stage) const { return ns_[stage]; }
  std::uint64_t count(int stage) const { return count_[stage]; }
  // The loop thread's CPU time since enable(), in nanoseconds. Call on the loop thread.
  std::uint64_t thread_cpu_ns() const;

 private:
  static constexpr int kMaxDepth = 16;
  bool enabled_ = false;
  int depth_ = 0;
  int overflow_ = 0;  // enters beyond kMaxDepth, not accounted (their leaves pop nothing)
  int stack_[kMaxDepth] = {};
  std::uint64_t mark_ = 0;  // when the innermost stage (re)started
  std::uint64_t cpu_start_ns_ = 0;
  std::uint64_t ns_[kStageCount] = {};
  std::uint64_t count_[kStageCount] = {};
};

StageClock& stage_clock();

// Charges the scope's lifetime (minus nested stages) to `stage` when the clock is enabled.
class StageScope {
 public:
  explicit StageScope(int stage) : on_(stage_clock().enabled()) {
    if (on_) stage_clock().enter(stage);
  }
  ~StageScope() {
    if (on_) stage_clock().leave();
  }
  StageScope(const StageScope&) = delete;
  StageScope& operator=(const StageScope&) = delete;

 private:
  bool on_;
};

}  // namespace fa
