// Per-route statistics of native routes and the Prometheus text exposition of the server's counters.
// No I/O, no Python: the metrics route and PyServer.metrics_text() both call render_metrics().
#pragma once

#include <cstdint>
#include <string>

namespace fa {

class Server;

// Latency bucket bounds in microseconds; the last bucket (index 11) is +Inf.
constexpr double kLatencyBoundsUs[11] = {5, 10, 25, 50, 100, 250, 500, 1000, 5000, 25000, 100000};

struct RouteStats {
  std::uint64_t hits = 0;
  std::uint64_t latency_buckets[12] = {};
  double latency_sum_us = 0;
  void record(double us) {
    hits++;
    std::size_t i = 0;
    while (i < 11 && us > kLatencyBoundsUs[i]) ++i;
    latency_buckets[i]++;
    latency_sum_us += us;
  }
};

// The server's counters and every native route's statistics, in the Prometheus text format (version 0.0.4).
std::string render_metrics(const Server& server);

}  // namespace fa
