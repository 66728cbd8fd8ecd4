// Session: the protocol spoken on a connection, above its Transport. One is in charge at a time: HTTP/1.1 from the
// start; HTTP/2 after the client's preface (h2c by prior knowledge) or ALPN "h2"; a WebSocket session after an
// accepted upgrade. The Connection hands the transport's plaintext to the session in charge and asks it about its
// time bounds when the connection's timer fires; each session keeps its own state and deadlines. A later protocol
// (WebSockets over HTTP/2, RFC 8441) is one more implementation of this interface.
//
// Lifetime: sessions are owned by their Connection and live as long as it does (a session that hands over keeps
// existing: the HTTP/1.1 session holds the WebSocket's handshake request). All on the loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fa {

// Input a session cannot take now (its parser is paused: the app is behind, a pipelined request waits, a WebSocket
// handshake is not answered yet), kept until the session resumes. The caller bounds it: past --body-high-water it
// stops reading from the socket.
class HeldInput {
 public:
  bool paused() const { return paused_; }
  void pause() { paused_ = true; }
  // Keep `len` bytes; returns the bytes now held.
  std::size_t hold(const char* data, std::size_t len) {
    bytes_.append(data, len);
    return bytes_.size();
  }
  // No longer paused: hand what is held to `process(char*, size_t)` (which may pause and hold again), keeping the
  // larger buffer's capacity for the next pause.
  template <class Process>
  void replay(Process&& process) {
    paused_ = false;
    std::string pending;
    pending.swap(bytes_);
    process(pending.data(), pending.size());
    if (bytes_.empty() && pending.capacity() > bytes_.capacity()) {
      pending.clear();
      bytes_.swap(pending);
    }
  }
  // No longer paused: what is held, for another session.
  std::string take() {
    paused_ = false;
    std::string held;
    held.swap(bytes_);
    return held;
  }
  // A new session's start: `bytes` are held, paused until replayed.
  void reset(std::string bytes) {
    bytes_ = std::move(bytes);
    paused_ = true;
  }

 private:
  std::string bytes_;
  bool paused_ = false;
};

class Session {
 public:
  // Plaintext from the peer (writable, valid only during the call).
  virtual void receive(char* data, std::size_t len) = 0;
  // The read callback that delivered input is over (its output is being flushed).
  virtual void read_end() {}
  // Output progress: a queued write completed; `drained` when the queue is at or below --write-low-water.
  virtual void output_progress(bool drained) = 0;
  // The connection's timer fired: act on every bound of this session that has passed (which may close the
  // connection); return when the next one falls due (UINT64_MAX: none).
  virtual std::uint64_t check_timeouts(std::uint64_t now) = 0;
  // Graceful shutdown: close now if idle, else after the exchange in progress.
  virtual void close_when_idle() = 0;
  // The connection is closing: whoever is waiting on this session (an app) learns it now.
  virtual void connection_lost() = 0;
  // Output still to be made before the connection may close (HTTP/2 frames).
  virtual bool output_pending() const { return false; }
  // Send what is buffered now (HTTP/2 makes its frames first).
  virtual void flush() = 0;

 protected:
  ~Session() = default;
};

}  // namespace fa
