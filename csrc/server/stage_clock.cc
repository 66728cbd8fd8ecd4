#include "server/stage_clock.h"

#include <ctime>

namespace fa {

namespace {
std::uint64_t now_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

const char* stage_name(int stage) {
  static const char* const kNames[kStageCount] = {"parse",       "route", "native", "scope",   "task_start",
                                                  "app",         "route_index", "send", "receive", "write"};
  return kNames[stage];
}

const char* stage_label(int stage) {
  static const char* const kLabels[kStageCount] = {
      "read callback + parse (native)", "native route lookup",   "native handler",
      "scope building",                 "Task start",            "app (Python)",
      "route index lookup (native)",    "send() serialisation",  "receive()",
      "write system call"};
  return kLabels[stage];
}

StageClock& stage_clock() {
  static StageClock clock;
  return clock;
}

void StageClock::enable() {
  enabled_ = true;
  depth_ = 0;
  overflow_ = 0;
  for (int s = 0; s < kStageCount; ++s) ns_[s] = count_[s] = 0;
  cpu_start_ns_ = now_ns(CLOCK_THREAD_CPUTIME_ID);
}

void StageClock::enter(int stage) {
  if (depth_ == kMaxDepth) {
    ++overflow_;
    return;
  }
  const std::uint64_t now = now_ns(CLOCK_MONOTONIC);
  if (depth_ > 0) ns_[stack_[depth_ - 1]] += now - mark_;
  stack_[depth_++] = stage;
  ++count_[stage];
  mark_ = now;
}

void StageClock::leave() {
  if (overflow_ > 0) {
    --overflow_;
    return;
  }
  if (depth_ == 0) return;
  const std::uint64_t now = now_ns(CLOCK_MONOTONIC);
  ns_[stack_[--depth_]] += now - mark_;
  mark_ = now;
}

std::uint64_t StageClock::thread_cpu_ns() const {
  return enabled_ ? now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_start_ns_ : 0;
}

}  // namespace fa
