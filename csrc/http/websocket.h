// WebSocket framing (RFC 6455): the incremental client-frame parser, server-frame serialisation, UTF-8 and close-code
// validation, and the opening-handshake checks. Pure functions and state over caller buffers: no I/O, no Python.
//
// The parser never allocates per frame: control payloads go to a fixed buffer, message payloads to one std::string
// whose capacity is kept across messages; a whole unfragmented message found in the input is unmasked in place and
// handed out without a copy. With permessage-deflate (set_inflater), a compressed message (RSV1 on its first frame)
// is inflated as its payload arrives, into the Inflater's buffer, and the size limit applies to the inflated bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "http/request.h"
#include "http/ws_deflate.h"

namespace fa::ws {

enum Opcode : std::uint8_t { kCont = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

// Close codes used by the server.
constexpr int kCloseNormal = 1000;
constexpr int kCloseProtocolError = 1002;
constexpr int kCloseNoStatus = 1005;  // "no code in the close frame" (never sent on the wire)
constexpr int kCloseAbnormal = 1006;  // "connection lost without a close frame" (never sent on the wire)
constexpr int kCloseInvalidData = 1007;
constexpr int kCloseTooBig = 1009;
constexpr int kCloseInternalError = 1011;  // also: the keepalive ping went unanswered (as websockets)
constexpr int kCloseServiceRestart = 1012;

constexpr std::size_t kMaxControlPayload = 125;
constexpr std::size_t kDefaultMaxMessage = 16 * 1024 * 1024;  // uvicorn's --ws-max-size default

bool valid_utf8(const char* data, std::size_t len);
// A code a peer may put in a close frame (RFC 6455 7.4.1/7.4.2): 1000-1003, 1007-1014, 3000-4999.
bool valid_close_code(int code);

// XOR `len` bytes with the 4-byte masking key, starting at key position `offset % 4`.
void apply_mask(char* data, std::size_t len, const std::uint8_t key[4], std::size_t offset);

// Server frame header (FIN set, unmasked) for a payload of `len` bytes: writes 2, 4 or 10 bytes to `out`. `rsv1`
// marks a compressed message (permessage-deflate).
std::size_t frame_header(char* out, std::uint8_t opcode, std::uint64_t len, bool fin = true, bool rsv1 = false);
// Header + payload appended to `out`.
void append_frame(std::string& out, std::uint8_t opcode, const char* data, std::size_t len);
// A close frame: empty payload for kCloseNoStatus, else the code and the reason (cut to fit 125 bytes).
void append_close(std::string& out, int code, std::string_view reason);
// A masked client frame (for tests and clients).
std::string client_frame(std::uint8_t opcode, std::string_view payload, bool fin = true,
                         std::uint32_t mask = 0x37fa213d, std::uint8_t rsv = 0);

// Sec-WebSocket-Accept is computed by the caller (SHA-1); the core checks the request:
//   0 = valid; else the HTTP status to answer (405 not GET, 400 bad key/version) and *reason (a static string).
int check_handshake(const RequestHead& head, const char** reason);
// True when the request asks for a WebSocket upgrade (Upgrade: websocket and Connection: upgrade).
bool is_websocket_upgrade(const RequestHead& head);

class FrameListener {
 public:
  static constexpr int kMsgContinue = 0;
  static constexpr int kMsgPause = 1;
  virtual ~FrameListener() = default;
  // A complete text (validated UTF-8) or binary message. Return kMsgPause to stop parsing after it.
  virtual int on_ws_message(bool text, const char* data, std::size_t len) = 0;
  virtual void on_ws_ping(const char* data, std::size_t len) = 0;
  virtual void on_ws_pong(const char* data, std::size_t len) = 0;
  // The peer's close frame (code kCloseNoStatus when it carried none). Parsing stops after it.
  virtual void on_ws_close(int code, std::string_view reason) = 0;
};

struct FrameResult {
  enum Kind { kOk, kPaused, kClosed, kError } kind = kOk;
  std::size_t consumed = 0;
  int close_code = 0;       // kError: the close code to fail the connection with (1002, 1007, 1009)
  const char* reason = "";  // kError: a short reason (also sent in the close frame)
};

class FrameParser {
 public:
  FrameParser(FrameListener* listener, std::size_t max_message) : listener_(listener), max_message_(max_message) {}
  FrameParser(const FrameParser&) = delete;
  FrameParser& operator=(const FrameParser&) = delete;

  // Parse `len` bytes (unmasked in place). After kPaused, call again with the unconsumed rest. After kClosed or
  // kError the parser must not be used again.
  FrameResult execute(char* data, std::size_t len);
  bool in_message() const { return in_message_; }
  // permessage-deflate was negotiated: RSV1 on a message's first frame now means "compressed" (without an
  // inflater it fails the connection with 1002). Set before the first execute(); the parser owns it.
  void set_inflater(std::unique_ptr<Inflater> inflater) { inflater_ = std::move(inflater); }

 private:
  FrameResult fail(int code, const char* reason, std::size_t consumed);
  // Validates the header in hdr_; returns 0 or a close code with *reason set.
  int start_frame(const char** reason);
  // Frame payload complete: dispatch. Returns kMsgContinue/kMsgPause, -1 after a close frame, or a close code.
  int finish_frame(const char* payload, std::size_t len, const char** reason);

  FrameListener* listener_;
  std::size_t max_message_;
  std::unique_ptr<Inflater> inflater_;  // permessage-deflate negotiated (else nullptr)
  std::string message_;                 // payload of the fragmented message being assembled (capacity kept)
  char control_[kMaxControlPayload];
  std::uint8_t hdr_[14];
  std::size_t hdr_len_ = 0;
  std::size_t hdr_need_ = 2;
  std::uint64_t remaining_ = 0;  // payload bytes of the current frame still to read
  std::size_t payload_pos_ = 0;  // payload bytes of the current frame read so far
  std::uint8_t mask_[4] = {};
  std::uint8_t opcode_ = 0;
  bool fin_ = false;
  bool in_payload_ = false;
  bool in_message_ = false;  // a fragmented message is in progress
  bool message_text_ = false;
  bool message_compressed_ = false;  // the message in progress goes through inflater_
  bool done_ = false;
};

}  // namespace fa::ws
