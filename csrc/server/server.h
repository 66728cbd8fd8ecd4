// Server: listeners, the set of open connections, configuration and counters for one uv_loop_t.
// No Python here; the AppHandler bridges to the ASGI app.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/date_cache.h"
#include "core/tls_session.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/router.h"
#include "http/websocket.h"
#include "server/metrics.h"

namespace fa {

class AppHandler;
class Connection;
class Transport;

// HTTP/2 settings and bounds (ServerConfig::http2).
struct Http2Config {
  bool enabled = false;  // h2c by prior knowledge on plain ports, ALPN "h2" on TLS ones
  // SETTINGS_MAX_CONCURRENT_STREAMS. Also the rate of requests a client may reset while their app runs (twice this
  // many at once, this many a second): beyond it, GOAWAY(ENHANCE_YOUR_CALM) (rapid reset, CVE-2023-44487).
  std::uint32_t max_concurrent_streams = 100;
  // SETTINGS_INITIAL_WINDOW_SIZE: the request body a stream may have in flight that the app has not taken yet
  // (what bounds a connection's buffered request bodies: this times the concurrent streams).
  std::uint32_t initial_stream_window = 65535;
  std::uint32_t connection_window = 1 << 20;  // connection-level receive window (its data is taken at once)
  // SETTINGS_MAX_HEADER_LIST_SIZE, and enforced: a request whose header list (RFC 9113 6.5.2 sizes) is larger
  // gets 431. nghttp2 itself bounds the HPACK table and each CONTINUATION sequence.
  std::uint32_t max_header_list_size = 65536;
};

struct ServerConfig {
  ParserLimits limits;
  ResponseDefaults defaults;
  std::uint64_t keep_alive_ms = 5000;
  // Time bounds per connection (0: off). Each fires only on a client that stalls; none of them on a client that
  // keeps sending or reading, however slowly its bytes come.
  std::uint64_t header_timeout_ms = 30000;  // the whole request head, from its first byte -> 408 and close
  std::uint64_t body_timeout_ms = 60000;    // no request-body byte while the body is being read -> close
  std::uint64_t send_timeout_ms = 60000;    // queued output not moving while the client does not read -> close
  // Memory bounds per connection.
  std::size_t body_high_water = 64 * 1024;   // buffered request body (and read-ahead) before reading pauses
  std::size_t write_high_water = 64 * 1024;  // unsent output before send() waits and before the next pipelined
                                             // request (or WebSocket frame) is taken up
  std::size_t write_low_water = 16 * 1024;
  std::size_t limit_concurrency = 0;         // 0: unlimited; else answer 503 beyond this many connections
  bool websocket = false;                    // serve WebSocket upgrades (else: answered as plain HTTP, then closed)
  std::size_t ws_max_message = ws::kDefaultMaxMessage;  // larger incoming messages fail the connection with 1009
                                                        // (compressed ones: the inflated size)
  std::uint64_t ws_close_timeout_ms = 10000;      // wait for the peer's close reply at most this long
  // TLS: every accepted connection is served over TLS with this context (null: plain). Shared by the server and
  // nothing else; it outlives every connection because the server does.
  std::shared_ptr<TlsContext> tls;
  std::uint64_t tls_handshake_timeout_ms = 30000;  // from the first byte of the handshake to its end -> close
  // uvicorn's --ws-* defaults. The message queue itself is the AppHandler's (it reads ws_max_queue).
  std::size_t ws_max_queue = 32;              // messages waiting for the app before reading pauses (>= 1)
  std::uint64_t ws_ping_interval_ms = 20000;  // keepalive ping every this long (0: no pings)
  std::uint64_t ws_ping_timeout_ms = 20000;   // no pong this long after a ping: close 1011 (kNoPingTimeout: off)
  bool ws_per_message_deflate = true;         // negotiate permessage-deflate when the client offers it
  static constexpr std::uint64_t kNoPingTimeout = UINT64_MAX;
  Http2Config http2;
};

struct ServerCounters {
  std::uint64_t requests = 0;
  std::uint64_t native_requests = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t responses_5xx = 0;
  std::uint64_t tls_handshake_failures = 0;  // handshakes refused, failed or timed out
  std::uint64_t files_sent = 0;              // response bodies sent from a file (send_file)
  std::uint64_t sendfile_bytes = 0;          // bytes of them that went by sendfile(2), never through user space
};

// Number of libuv handles opened by fasterapi-asgi and not yet closed (all servers). Tests assert it returns to zero.
std::int64_t live_handles();
void live_handles_add(int delta);

std::uint64_t monotonic_ns();

class Server {
 public:
  Server(uv_loop_t* loop, AppHandler* handler, ServerConfig config);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // Serve an already listening socket (TCP or Unix). The descriptor is dup'ed. Returns "" or an error message.
  std::string listen_fd(int fd, int backlog);
  void stop_accepting();
  void shutdown();   // graceful: stop accepting, close idle connections, close busy ones after their response
  void close_all();  // immediate

  uv_loop_t* loop() const { return loop_; }
  AppHandler* handler() const { return handler_; }
  const ServerConfig& config() const { return config_; }
  ServerCounters& counters() { return counters_; }
  const ServerCounters& counters() const { return counters_; }
  DateCache& date() { return date_; }
  const Router& router() const { return router_; }
  // Register a native route (see Router::add). Returns "" or an error.
  std::string add_route(std::string_view method, std::string_view pattern, NativeRoute route);
  // Statistics of the native route with this id (NativeRoute::id), owned by the server.
  RouteStats& route_stats(std::size_t id) { return route_stats_[id]; }
  const RouteStats& route_stats(std::size_t id) const { return route_stats_[id]; }
  bool shutting_down() const { return shutting_down_; }
  std::size_t connection_count() const { return connection_count_; }
  std::size_t active_requests() const { return active_requests_; }
  // Filled by each native route match (request_dispatch.h): one loop, one thread, one match at a time.
  RouteParams& route_params_scratch() { return route_params_scratch_; }

  // Write corking: `t` has output to send at the end of this loop turn (flushed by a uv_prepare callback, after the
  // turn's Task steps and before the next poll, so a streamed response's chunks leave in one write).
  void cork(Transport* t);
  // `t` is closing: forget it if it is corked.
  void uncork(Transport* t);

  // Shared read buffer: reads are processed synchronously, leftovers are copied into the connection.
  char* read_buffer() { return read_buf_; }
  // Shared scratch for one compressed WebSocket message on its way out (used and released within one call).
  ws::ByteBuffer& ws_deflate_scratch() { return ws_deflate_scratch_; }
  static constexpr std::size_t kReadBufferSize = 256 * 1024;
  // TLS, one buffer per direction: decrypted input (one read's plaintext is taken, and parsed in place, in steps of
  // this size) and ciphertext on its way out. Separate because output is flushed while input is being parsed (a
  // parser callback answers a pipelined request, sends a file step, accepts a WebSocket): one shared buffer let the
  // ciphertext overwrite the plaintext of the requests still to be parsed.
  char* tls_input_buffer() { return tls_in_buf_.get(); }
  char* tls_output_buffer() { return tls_out_buf_.get(); }
  // A file's next step on its way into the TLS writer (Transport::send_file); made on first use.
  char* file_buffer() {
    if (file_buf_ == nullptr) file_buf_.reset(new char[kFileBufferSize]);
    return file_buf_.get();
  }
  static constexpr std::size_t kFileBufferSize = 64 * 1024;
  static constexpr std::size_t kTlsBufferSize = 64 * 1024;

 private:
  friend class Connection;
  friend class Http1Session;
  friend class H2Session;
  friend class H2Stream;
  struct Listener {
    union {
      uv_tcp_t tcp;
      uv_pipe_t pipe;
      uv_stream_t stream;
      uv_handle_t handle;
    } io;
    Server* server;
    bool tcp;
    std::string unix_path;  // a Unix socket's bound path ("" for TCP and abstract sockets)
  };
  static void on_connection(uv_stream_t* listener, int status);
  static void on_prepare(uv_prepare_t* p);
  void close_cork_handle();
  static void on_listener_closed(uv_handle_t* h);
  void link(Connection* c);
  void unlink(Connection* c);

  uv_loop_t* loop_;
  AppHandler* handler_;
  ServerConfig config_;
  ServerCounters counters_;
  DateCache date_;
  Router router_;
  std::vector<RouteStats> route_stats_;  // by NativeRoute::id
  RouteParams route_params_scratch_;     // filled by each route match (dispatch_request)
  std::vector<Listener*> listeners_;
  uv_prepare_t* cork_handle_ = nullptr;  // heap-owned; freed by its own close callback
  bool cork_active_ = false;
  std::vector<Transport*> corked_;
  std::vector<Transport*> flushing_;
  Connection* connections_ = nullptr;
  std::size_t connection_count_ = 0;
  std::size_t active_requests_ = 0;
  bool shutting_down_ = false;
  char* read_buf_;
  std::unique_ptr<char[]> tls_in_buf_;   // allocated when config_.tls is set
  std::unique_ptr<char[]> tls_out_buf_;  // allocated when config_.tls is set
  std::unique_ptr<char[]> file_buf_;
  ws::ByteBuffer ws_deflate_scratch_;
};

}  // namespace fa
