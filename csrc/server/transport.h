// Transport: one accepted byte stream (TCP or Unix socket), with TLS when the server has a TLS context. It owns
// everything between the socket and the protocol sessions: reading (decrypting first over TLS), the output buffer,
// the write queue (try-write now, copy and queue the rest), corking to the end of the loop turn, the send bound
// (a client that stops reading), the TLS handshake bound, a file as a response body (sendfile(2) on a plain
// socket, read-and-encrypt over TLS) and the connection's one timer. Nothing above it knows whether TLS is on.
// Compare nginx, which swaps c->recv / c->send_chain for TLS, and h2o's h2o_socket_t.
//
// What happens to the bytes is its listener's business (the Connection, which hands them to the protocol session
// in charge): plaintext in (on_transport_input), progress of the output (on_transport_output), the timer, the end.
//
// Lifetime (libuv rules): every libuv handle of the connection is the transport's: the stream, the timer and, after
// the first file that had to wait for the socket, a poll handle. close() closes them all; when the last one has
// closed, the listener gets on_transport_closed() and may delete the transport (and itself) there, never earlier.
// Every method runs on the loop thread.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/tls_session.h"
#include "server/server.h"

namespace fa {

class Server;

// One time bound at `now`: true when `limit` ms have passed since `since`; else *next_due is lowered to when it
// falls due. Every bound of the transport and the sessions is checked this way when the connection's timer fires.
inline bool deadline_passed(std::uint64_t now, std::uint64_t since, std::uint64_t limit, std::uint64_t* next_due) {
  if (now - since >= limit) return true;
  if (since + limit < *next_due) *next_due = since + limit;
  return false;
}

class TransportListener {
 public:
  // Plaintext bytes (decrypted over TLS), writable, valid only during the call.
  virtual void on_transport_input(char* data, std::size_t len) = 0;
  // A read callback took its input (the transport is still open): send what it produced.
  virtual void on_transport_read_end() = 0;
  // A queued write completed; `drained`: the queue is at or below --write-low-water.
  virtual void on_transport_output(bool drained) = 0;
  // More output will be made before the stream may close (HTTP/2 frames not yet produced): a close waits for it.
  virtual bool transport_output_pending() const = 0;
  // A flush asked for with cork() is due (end of the loop turn).
  virtual void on_transport_flush_due() = 0;
  // TLS: the handshake completed (alpn() is known now).
  virtual void on_tls_handshake_done() = 0;
  // The timer fell due (arm_timer): check every bound, re-arm for the next.
  virtual void on_transport_timer() = 0;
  // The file of send_file() is out; its suffix is in out(), not sent yet.
  virtual void on_file_sent() = 0;
  // A bound of the transport expired, or TLS failed: the transport is closing (for logging).
  virtual void on_transport_timeout(const char* what) = 0;
  virtual void on_tls_failure(const char* reason) = 0;
  // close() began: the handles are closing; the sessions tell their apps. Called once.
  virtual void on_transport_closing() = 0;
  // The last handle closed: the transport may be deleted now (with its owner).
  virtual void on_transport_closed() = 0;

 protected:
  ~TransportListener() = default;
};

class Transport {
 public:
  Transport(Server* server, TransportListener* listener, bool tcp);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Initialise the handles and accept from `listener`; TLS starts when the server has a context. On failure the
  // transport closes itself and returns false.
  bool accept_from(uv_stream_t* listener);

  // ---- reading ----
  void start_reading();
  void stop_reading();
  bool reading() const { return reading_; }
  // Inside a read callback, taking its input: flushes wait for its end (on_transport_read_end).
  bool in_read() const { return in_read_; }
  // Inside a read callback, its final flush included.
  bool in_read_callback() const { return in_read_callback_; }
  // Any byte arrived on this connection.
  bool received() const { return received_; }

  // ---- writing ----
  // Bytes waiting for the next flush.
  std::string& out() { return out_; }
  // Send out() followed by `extra` (referenced only during this call; copied if the socket cannot take it now),
  // encrypted first over TLS. Closes when close_when_flushed() was asked and nothing is left.
  void flush(const char* extra = nullptr, std::size_t extra_len = 0);
  // on_transport_flush_due() at the end of this loop turn (a streamed response's chunks leave in one write), or
  // now when a write is already pending or enough is buffered (the backpressure check reads libuv's queue). Inside
  // a read callback, nothing: its end flushes.
  void cork();
  // on_transport_flush_due() at the end of this loop turn, never now (HTTP/2: nghttp2 must not be re-entered).
  void flush_at_turn_end();
  // Output is waiting to be sent: a read callback's end flushes it (TLS handshake records included).
  bool has_output() const {
    return !out_.empty() || close_after_flush_ || (tls_ != nullptr && tls_->pending_output() > 0);
  }
  // The flush to go at the end of this turn is already asked for.
  bool corked() const { return corked_; }
  // Output not yet taken by the socket (buffered here or queued in libuv): what backpressure reads.
  std::size_t write_queue_bytes() const { return io_.stream.write_queue_size + out_.size(); }
  // libuv's queue alone (HTTP/2 frames are made while it is below the high-water mark).
  std::size_t socket_queue_bytes() const { return io_.stream.write_queue_size; }
  bool writes_pending() const { return pending_writes_ > 0; }
  // Output is above --write-high-water even after handing libuv what it takes now (what it queues counts): the
  // session stops taking input or the app waits, until on_transport_output() says it drained.
  bool output_backed_up() {
    // Inline up to the common answer (below the mark): every HTTP/1.1 request asks once.
    return write_queue_bytes() > server_->config().write_high_water && output_backed_up_after_flush();
  }

  // ---- a file as the response body (transport_file.cc) ----
  // Send `remaining` bytes of `fd` from `offset` (the transport owns the descriptor), then put `suffix` (framing
  // after the body) in out() and call on_file_sent(). A failure closes the transport.
  void send_file(int fd, std::uint64_t offset, std::uint64_t remaining, std::string suffix);
  bool sending_file() const { return file_ != nullptr; }

  // ---- closing ----
  // Send what is buffered (and what the listener still has to produce), then close; reading stops now.
  void close_when_flushed();
  // The same, without flushing now (inside nghttp2: the flush that follows closes).
  void close_after_next_flush() {
    close_after_flush_ = true;
    stop_reading();
  }
  bool closing_when_flushed() const { return close_after_flush_; }
  void close();
  bool closing() const { return closing_; }

  // ---- time ----
  // Make sure the timer fires no later than `due_ms` (loop time). The timer is lazy: it is never stopped per
  // request; when it fires, the listener checks every bound and re-arms for the next one.
  // NOTE: stopping and restarting it per request cost ~0.8% of server CPU on raw ASGI plain text (two timer-heap
  // operations per request); a lazy timer costs a comparison.
  void arm_timer(std::uint64_t due_ms) {
    // Inline up to the common answer (already armed early enough): every request asks twice.
    if (closing_ || (timer_armed_ && timer_due_ms_ <= due_ms)) return;
    start_timer(due_ms);
  }
  // The transport's own bounds at `now`: output the client does not take (--timeout-send), a TLS handshake that does
  // not complete. Past one, it closes and returns false; else lowers *next_due to when one falls due.
  bool check_timeouts(std::uint64_t now, std::uint64_t* next_due);
  // The TLS handshake is under way (its bound applies, not the sessions' bounds).
  bool handshaking() const { return handshake_started_ms_ != 0 && tls_ != nullptr && !tls_->handshake_done(); }

  // ---- the peer ----
  bool is_tcp() const { return tcp_; }
  bool is_tls() const { return tls_ != nullptr; }
  // The protocol ALPN selected ("" without TLS or ALPN).
  std::string alpn() const { return tls_ != nullptr ? tls_->alpn() : std::string(); }
  const std::string& peer_host() const { return addresses_.peer_host; }
  int peer_port() const { return addresses_.peer_port; }
  const std::string& local_host() const { return addresses_.local_host; }
  int local_port() const { return addresses_.local_port; }
  // A Unix socket's bound path, as the server's address (uvicorn's scope["server"] = [path, None]).
  void set_local_host(std::string host) { addresses_.local_host = std::move(host); }

 private:
  friend class Server;  // the cork list clears corked_ and calls the listener

  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_handle_closed(uv_handle_t* h);
  void on_read_data(ssize_t nread, const uv_buf_t* buf);
  // TLS: decrypt what was read and hand the plaintext on; false when the transport closed.
  bool tls_read(const char* data, std::size_t len);
  void flush_tls(const char* extra, std::size_t extra_len);
  // Hand bytes to the socket: tried now, the rest copied and queued. False when the transport closed on an error.
  bool write_raw(const char* a, std::size_t a_len, const char* b, std::size_t b_len);
  // Nothing left to send and a close was asked for.
  void close_if_flushed();
  void start_timer(std::uint64_t due_ms);
  // output_backed_up() once the queue is above the mark: flush what is buffered, then look again.
  bool output_backed_up_after_flush();

  // The file transfer (transport_file.cc): send what the socket takes now, else arrange to be called again.
  void file_pump();
  bool file_sendfile();          // plain sockets; false when it must wait (or closed)
  bool file_read_into_writer();  // TLS; false when it must wait (or closed)
  bool file_read_inline();       // a small file behind the head in out_; false when closed
  void file_wait_writable();
  void file_done();
  static void on_file_writable(uv_poll_t* p, int status, int events);

  Server* server_;
  TransportListener* listener_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } io_;
  uv_timer_t timer_;
  std::unique_ptr<TlsSession> tls_;  // created on accept when the server has a TLS context
  std::string out_;
  // A file being sent as the response body, and the handle that waits for the socket to be writable again (a
  // uv_poll on a dup of the socket's descriptor: the stream handle keeps its own; made on first need, kept for the
  // transport's life, closed with it).
  struct FileSend {
    int fd;
    std::uint64_t offset;
    std::uint64_t remaining;
    std::string suffix;    // framing after the body (the last chunk of a chunked response)
    bool waiting = false;  // for the socket (plain) or for the write queue to drain (TLS)
    bool corked = false;   // TCP_CORK set for the transfer (plain TCP), cleared in file_done()
  };
  std::unique_ptr<FileSend> file_;
  struct FilePoll {
    uv_poll_t handle;
    int fd = -1;  // dup of the socket's descriptor, closed when the handle has closed
  };
  std::unique_ptr<FilePoll> file_poll_;
  // Both ends of a TCP connection ("" and 0 for a Unix socket's peer), read once on accept.
  struct Addresses {
    std::string peer_host, local_host;
    int peer_port = 0, local_port = 0;
  };
  Addresses addresses_;
  int open_handles_ = 0;
  int pending_writes_ = 0;
  bool tcp_;
  bool reading_ = false;
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool corked_ = false;  // registered with Server::cork()
  bool in_read_ = false;
  bool in_read_callback_ = false;
  bool received_ = false;
  bool timer_armed_ = false;  // the timer is running, due at timer_due_ms_
  std::uint64_t timer_due_ms_ = 0;
  std::uint64_t last_write_ms_ = 0;        // last progress of queued output (or of a file)
  std::size_t queue_at_check_ = 0;         // libuv's write queue size at the last check_timeouts()
  std::uint64_t handshake_started_ms_ = 0; // the first TLS bytes arrived (0: not yet)
};

}  // namespace fa
