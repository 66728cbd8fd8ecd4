#include "server/native_exec.h"

#include <llhttp.h>

#include <cstdio>
#include <vector>

#include "server/connection.h"
#include "server/server.h"

struct fa_response {
  int status = 200;
  std::string headers;
  std::string body;
};

namespace fa {

namespace {

void api_set_status(fa_response* res, int status) { res->status = status; }

int api_add_header(fa_response* res, const char* name, size_t name_len, const char* value, size_t value_len) {
  const std::string_view n(name, name_len), v(value, value_len);
  if (!is_valid_header_name(n) || !is_valid_header_value(v) || ascii_iequals(n, "content-length")) return -1;
  res->headers.append(n);
  res->headers.append(": ");
  res->headers.append(v);
  res->headers.append("\r\n");
  return 0;
}

void api_write(fa_response* res, const char* data, size_t len) { res->body.append(data, len); }

const fa_response_api kResponseApi = {FA_NATIVE_ABI_VERSION, &api_set_status, &api_add_header, &api_write};

fa_str to_str(std::string_view v) { return fa_str{v.data(), v.size()}; }

// Scratch space reused by every native request on this thread: steady state allocates nothing.
struct Scratch {
  std::vector<fa_pair> headers;
  std::vector<fa_pair> params;
  fa_response response;
  std::string dynamic_body;
};
thread_local Scratch t_scratch;

void write_head(Connection& c, int status, std::string_view headers, std::size_t body_len, bool emit_length) {
  Server& server = *c.server();
  std::string& out = c.out();
  char scratch[64];
  std::string_view line = status_line(status, scratch);
  if (line.empty()) line = status_line(500, scratch);
  out.append(line);
  append_default_headers(out, server.config().defaults, server.date());
  out.append(headers);
  if (emit_length) {
    out.append("content-length: ");
    char digits[24];
    char* p = digits + sizeof digits;
    std::size_t v = body_len;
    do {
      *--p = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    out.append(p, static_cast<std::size_t>(digits + sizeof digits - p));
    out.append("\r\n");
  }
  if (!c.response().keep_alive()) out.append("connection: close\r\n");
  else if (c.response().http10()) out.append("connection: keep-alive\r\n");
  out.append("\r\n");
}

void respond(Connection& c, int status, std::string_view headers, std::string_view body, bool emit_length) {
  write_head(c, status, headers, body.size(), emit_length);
  if (c.head().method != HTTP_HEAD) c.out().append(body);
}

void record(Connection& c, NativeRoute& route) {
  route.hits++;
  const double us = static_cast<double>(monotonic_ns() - c.request_start_ns()) / 1000.0;
  std::size_t i = 0;
  while (i < 11 && us > kLatencyBoundsUs[i]) ++i;
  route.latency_buckets[i]++;
  route.latency_sum_us += us;
}

int run_user_handler(Connection& c, const NativeRoute& route, const std::string& body) {
  Scratch& s = t_scratch;
  const RequestHead& head = c.head();
  s.headers.clear();
  for (const auto& h : head.headers) s.headers.push_back(fa_pair{to_str(head.str(h.first)), to_str(head.str(h.second))});
  RouteParams params;
  const NativeRoute* matched = nullptr;
  const std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(head.method));
  c.server()->router().match(method, head.path_view(), &matched, &params, nullptr);
  s.params.clear();
  for (int i = 0; i < params.count; ++i) s.params.push_back(fa_pair{to_str(params.names[i]), to_str(params.values[i])});
  fa_request req{};
  req.abi_version = FA_NATIVE_ABI_VERSION;
  req.method = to_str(method);
  req.path = to_str(head.path_view());
  req.query = to_str(head.query_view());
  req.headers = s.headers.data();
  req.header_count = s.headers.size();
  req.params = s.params.data();
  req.param_count = s.params.size();
  req.body = fa_str{body.data(), body.size()};
  fa_response& res = s.response;
  res.status = 200;
  res.headers.clear();
  res.body.clear();
  int rc = -1;
  try {
    rc = route.fn(&req, &res, &kResponseApi, route.user_data);
  } catch (...) {
    rc = -1;
  }
  if (rc != 0 || res.status < 100 || res.status > 999) {
    static const std::string_view kType = "content-type: text/plain; charset=utf-8\r\n";
    respond(c, 500, kType, "Internal Server Error", true);
    c.server()->counters().responses_5xx++;
    return 500;
  }
  const bool no_body = res.status < 200 || res.status == 204 || res.status == 304;
  respond(c, res.status, res.headers, no_body ? std::string_view() : std::string_view(res.body), !no_body);
  return res.status;
}

}  // namespace

int execute_native_route(Connection& c, const NativeRoute& route_in, const std::string& allow,
                         const std::string& body) {
  auto& route = const_cast<NativeRoute&>(route_in);
  Server& server = *c.server();
  int status = route.status;
  switch (route.kind) {
    case NativeRoute::kStatic:
      if (route.status == 405) {
        std::string& h = t_scratch.dynamic_body;
        h.assign("allow: ");
        h.append(allow);
        h.append("\r\ncontent-type: text/plain; charset=utf-8\r\n");
        respond(c, 405, h, "Method Not Allowed", true);
        return 405;
      }
      respond(c, route.status, route.headers, route.body, false);
      break;
    case NativeRoute::kHealth: {
      static const std::string_view kType = "content-type: text/plain; charset=utf-8\r\n";
      status = server.shutting_down() ? 503 : 200;
      respond(c, status, kType, status == 503 ? std::string_view("shutting down") : std::string_view(route.body), true);
      break;
    }
    case NativeRoute::kMetrics: {
      std::string& text = t_scratch.dynamic_body;
      text = render_metrics(server);
      respond(c, 200, "content-type: text/plain; version=0.0.4; charset=utf-8\r\n", text, true);
      status = 200;
      break;
    }
    case NativeRoute::kUser:
      status = run_user_handler(c, route, body);
      break;
  }
  record(c, route);
  return status;
}

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

void append_uint(std::string& out, std::uint64_t v) { out += std::to_string(v); }

void append_route_labels(std::string& out, const NativeRoute& r) {
  out += "method=\"";
  append_label(out, r.method);
  out += "\",route=\"";
  append_label(out, r.pattern);
  out += '"';
}

}  // namespace

std::string render_metrics(Server& server) {
  const ServerCounters& k = server.counters();
  std::string out;
  out.reserve(4096);
  auto counter = [&](const char* name, const char* help, std::uint64_t v, const char* type) {
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
    append_uint(out, v);
    out += '\n';
  };
  counter("fasterapi_requests_total", "Requests answered (native and ASGI).", k.requests, "counter");
  counter("fasterapi_native_requests_total", "Requests answered by native routes.", k.native_requests, "counter");
  counter("fasterapi_connections_total", "Connections accepted.", k.connections_total, "counter");
  counter("fasterapi_connections_open", "Connections open now.", server.connection_count(), "gauge");
  counter("fasterapi_bytes_in_total", "Bytes read from clients.", k.bytes_in, "counter");
  counter("fasterapi_bytes_out_total", "Bytes written to clients.", k.bytes_out, "counter");
  counter("fasterapi_bad_requests_total", "Requests rejected as malformed.", k.bad_requests, "counter");
  out += "# HELP fasterapi_route_requests_total Requests per native route.\n";
  out += "# TYPE fasterapi_route_requests_total counter\n";
  for (NativeRoute* r : server.router().routes()) {
    out += "fasterapi_route_requests_total{";
    append_route_labels(out, *r);
    out += "} ";
    append_uint(out, r->hits);
    out += '\n';
  }
  out += "# HELP fasterapi_route_latency_seconds Native route latency, request start to response queued.\n";
  out += "# TYPE fasterapi_route_latency_seconds histogram\n";
  char number[32];
  for (NativeRoute* r : server.router().routes()) {
    std::uint64_t cumulative = 0;
    for (int i = 0; i < 12; ++i) {
      cumulative += r->latency_buckets[i];
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
      append_uint(out, cumulative);
      out += '\n';
    }
    out += "fasterapi_route_latency_seconds_sum{";
    append_route_labels(out, *r);
    std::snprintf(number, sizeof number, "} %.9f\n", r->latency_sum_us / 1e6);
    out += number;
    out += "fasterapi_route_latency_seconds_count{";
    append_route_labels(out, *r);
    out += "} ";
    append_uint(out, r->hits);
    out += '\n';
  }
  return out;
}

}  // namespace fa
