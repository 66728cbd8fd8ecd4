// permessage-deflate (RFC 7692) for the WebSocket session: negotiation of the client's offers (as the websockets
// library's server does with uvicorn's settings), and per-message compression and decompression with zlib.
// Pure state over caller buffers: no I/O, no Python. zlib stays behind this header (z_stream is forward-declared).
//
// Decompression is bounded: an Inflater never holds more than its limit + 1 bytes of output, whatever the input
// inflates to (a "deflate bomb" of a few KiB that would expand to gigabytes is refused with 1009 after at most that
// much work and memory), plus zlib's own window (2^bits bytes) and state (~7 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct z_stream_s;

namespace fa::ws {

// The server's configuration, uvicorn's (websockets' ServerPerMessageDeflateFactory(server_max_window_bits=12,
// client_max_window_bits=12, compress_settings={"memLevel": 5})): ~32 KiB of compressor state and a 4 KiB inflate
// window per connection instead of zlib's defaults (256 KiB + 32 KiB).
constexpr int kServerMaxWindowBits = 12;
constexpr int kClientMaxWindowBits = 12;
constexpr int kDeflateMemLevel = 5;

// What was agreed, from the server's point of view.
struct DeflateParams {
  bool server_no_context_takeover = false;  // our compressor starts every message afresh
  bool client_no_context_takeover = false;  // so does the client's: our inflater resets after every message
  int server_max_window_bits = 15;          // our compressor's LZ77 window
  int client_max_window_bits = 15;          // the client's window (our inflater's)
};

enum class Negotiation {
  kNone,           // no acceptable permessage-deflate offer: the extension is not used
  kAccepted,       // *params and *response (the Sec-WebSocket-Extensions response value) are set
  kInvalidHeader,  // a value is not valid Sec-WebSocket-Extensions syntax: answer 400 with *response as reason
};

// Negotiate from the request's Sec-WebSocket-Extensions values (`count` of them, each trimmed of OWS), as the
// websockets library does: offers are taken in order, the first acceptable permessage-deflate offer wins, an offer
// with unknown, repeated or invalid parameters is skipped (declined), other extensions are ignored. Response
// parameters follow RFC 7692 section 7.1 with the server limits above, e.g. the browsers' and websockets'
// "permessage-deflate; client_max_window_bits" gets "permessage-deflate; server_max_window_bits=12;
// client_max_window_bits=12". A syntax error gives websockets' wording ("invalid Sec-WebSocket-Extensions header:
// expected token at 3 in ...").
Negotiation negotiate_deflate(const std::string_view* values, std::size_t count, DeflateParams* params,
                              std::string* response);

// A growable byte buffer that never zero-fills (malloc/realloc). Allocation failure leaves it unchanged and
// returns false (callers turn it into a close code or std::bad_alloc: nothing here throws).
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  ~ByteBuffer();
  char* data() { return data_; }
  const char* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return cap_; }
  void set_size(std::size_t n) { size_ = n; }
  void clear() { size_ = 0; }
  // Capacity of at least `n` bytes (grown geometrically, never beyond `cap_limit` when that is >= n).
  bool reserve(std::size_t n, std::size_t cap_limit = SIZE_MAX);
  // Free the storage when it is larger than `keep` bytes (after an unusually large message).
  void trim(std::size_t keep);

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

// Outgoing messages (server to client). Owned by the connection; one message at a time. zlib's state (about
// 38 KiB with uvicorn's settings) is allocated on the first message: a session that never sends costs nothing.
class Deflater {
 public:
  // window_bits 9..15.
  Deflater(int window_bits, bool no_context_takeover);
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;
  ~Deflater();
  // One whole message compressed into `out` (replacing its contents): the deflate blocks, sync-flushed, without the
  // final 00 00 FF FF (RFC 7692 7.2.1); sent with RSV1 on its (only) frame. False when memory ran out (the state is
  // then reset, which the peer's inflater tolerates: our later messages only refer to what follows).
  bool compress(const char* data, std::size_t len, ByteBuffer& out);

 private:
  bool ready();  // zlib's state exists (allocated on first use)

  z_stream_s* zs_ = nullptr;
  int window_bits_;
  bool no_context_takeover_;
};

// Incoming messages (client to server), fed frame payloads as they arrive, inflated into a buffer bounded by
// `max_size` (the session's --ws-max-size): the size limit applies to the inflated message. zlib's state (the
// window, 2^window_bits bytes, and ~7 KiB) is allocated on the first compressed message.
class Inflater {
 public:
  // window_bits 8..15 (inflating with a larger window than the peer's is harmless, so 8 is taken as 9: zlib's own
  // compressor uses 9 when asked for 8).
  Inflater(int window_bits, bool no_context_takeover, std::size_t max_size);
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater();
  // Compressed bytes of the current message. Returns 0, or a close code with *reason set: 1009 once the message
  // inflates beyond max_size (nothing beyond max_size + 1 bytes is ever produced), 1002 for data that are not
  // deflate, 1011 when memory ran out.
  int feed(const char* data, std::size_t len, const char** reason);
  // The message's last frame is in: inflate the implied 00 00 FF FF tail. Returns 0 or a close code (as feed).
  int finish(const char** reason);
  // The inflated message (after finish()).
  const char* data() const { return out_.data(); }
  std::size_t size() const { return out_.size(); }
  // Bytes allocated for inflated output: never more than max_size + 1 (what the tests check).
  std::size_t capacity() const { return out_.capacity(); }
  // The message was handed out: forget it (and the LZ77 window under client_no_context_takeover).
  void end_message();

 private:
  int inflate_some(const char* data, std::size_t len, const char** reason);

  z_stream_s* zs_ = nullptr;
  ByteBuffer out_;
  std::size_t max_size_;
  int window_bits_;
  bool no_context_takeover_;
  bool stream_end_ = false;  // the peer ended the deflate stream (a BFINAL block): the rest of the message is ignored
};

}  // namespace fa::ws
