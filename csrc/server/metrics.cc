#include "server/metrics.h"

#include <cstdio>

#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

namespace {

// Prometheus label value: backslash, double quote and newline escaped.
void append_label(std::string& out, std::string_view v) {
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
}

void append_route_labels(std::string& out, const NativeRoute& r) {
  out += "method=\"";
  append_label(out, r.method);
  out += "\",route=\"";
  append_label(out, r.pattern);
  out += '"';
}

void append_metric(std::string& out, const char* name, const char* help, const char* type, std::uint64_t v) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
  out += name;
  out += ' ';
  append_decimal(out, v);
  out += '\n';
}

// --stats: the loop thread's CPU time by stage; "loop" is the rest of the thread's CPU time (libuv, uvloop,
// asyncio's Task stepping), so the stages add up to fasterapi_loop_thread_cpu_seconds_total.
void append_stage_metrics(std::string& out) {
  const StageClock& clock = stage_clock();
  if (!clock.enabled()) return;
  const std::uint64_t cpu = clock.thread_cpu_ns();
  auto seconds = [&out](std::uint64_t ns) {
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%.9f", static_cast<double>(ns) / 1e9);
    out.append(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  };
  out += "# HELP fasterapi_loop_thread_cpu_seconds_total CPU time of the event loop's thread since start-up.\n";
  out += "# TYPE fasterapi_loop_thread_cpu_seconds_total counter\nfasterapi_loop_thread_cpu_seconds_total ";
  seconds(cpu);
  out += "\n# HELP fasterapi_stage_seconds_total Loop-thread time by request stage (--stats); loop is the rest.\n";
  out += "# TYPE fasterapi_stage_seconds_total counter\n";
  std::uint64_t staged = 0;
  for (int s = 0; s < kStageCount; ++s) {
    staged += clock.ns(s);
    out += "fasterapi_stage_seconds_total{stage=\"";
    out += stage_name(s);
    out += "\"} ";
    seconds(clock.ns(s));
    out += '\n';
  }
  out += "fasterapi_stage_seconds_total{stage=\"loop\"} ";
  seconds(cpu > staged ? cpu - staged : 0);
  out += '\n';
}

}  // namespace

std::string render_metrics(const Server& server) {
  const ServerCounters& k = server.counters();
  std::string out;
  out.reserve(4096);
  append_metric(out, "fasterapi_requests_total", "Requests answered (native and ASGI).", "counter", k.requests);
  append_metric(out, "fasterapi_native_requests_total", "Requests answered by native routes.", "counter",
                k.native_requests);
  append_metric(out, "fasterapi_connections_total", "Connections accepted.", "counter", k.connections_total);
  append_metric(out, "fasterapi_connections_open", "Connections open now.", "gauge", server.connection_count());
  append_metric(out, "fasterapi_bytes_in_total", "Bytes read from clients.", "counter", k.bytes_in);
  append_metric(out, "fasterapi_bytes_out_total", "Bytes written to clients.", "counter", k.bytes_out);
  append_metric(out, "fasterapi_bad_requests_total", "Requests rejected as malformed.", "counter", k.bad_requests);
  append_metric(out, "fasterapi_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (plain HTTP on the TLS port included).", "counter",
                k.tls_handshake_failures);
  append_metric(out, "fasterapi_files_sent_total", "Response bodies sent from a file (ASGI pathsend).", "counter",
                k.files_sent);
  append_metric(out, "fasterapi_sendfile_bytes_total", "Bytes of file bodies sent with sendfile(2).", "counter",
                k.sendfile_bytes);
  append_stage_metrics(out);
  const std::vector<const NativeRoute*> routes = server.router().routes();
  out += "# HELP fasterapi_route_requests_total Requests per native route.\n";
  out += "# TYPE fasterapi_route_requests_total counter\n";
  for (const NativeRoute* r : routes) {
    out += "fasterapi_route_requests_total{";
    append_route_labels(out, *r);
    out += "} ";
    append_decimal(out, server.route_stats(r->id).hits);
    out += '\n';
  }
  out += "# HELP fasterapi_route_latency_seconds Native route latency, request start to response queued.\n";
  out += "# TYPE fasterapi_route_latency_seconds histogram\n";
  char number[32];
  for (const NativeRoute* r : routes) {
    const RouteStats& st = server.route_stats(r->id);
    std::uint64_t cumulative = 0;
    for (int i = 0; i < 12; ++i) {
      cumulative += st.latency_buckets[i];
      out += "fasterapi_route_latency_seconds_bucket{";
      append_route_labels(out, *r);
      out += ",le=\"";
      if (i < 11) {
        std::snprintf(number, sizeof number, "%g", kLatencyBoundsUs[i] / 1e6);
        out += number;
      } else {
        out += "+Inf";
      }
      out += "\"} ";
      append_decimal(out, cumulative);
      out += '\n';
    }
    out += "fasterapi_route_latency_seconds_sum{";
    append_route_labels(out, *r);
    std::snprintf(number, sizeof number, "} %.9f\n", st.latency_sum_us / 1e6);
    out += number;
    out += "fasterapi_route_latency_seconds_count{";
    append_route_labels(out, *r);
    out += "} ";
    append_decimal(out, st.hits);
    out += '\n';
  }
  return out;
}

}  // namespace fa
