#include "http/websocket.h"

#include <llhttp.h>

#include <cstring>

namespace fa::ws {

bool valid_utf8(const char* data, std::size_t len) {
  const auto* s = reinterpret_cast<const unsigned char*>(data);
  std::size_t i = 0;
  while (i < len) {
    // ASCII fast path, 8 bytes at a time.
    if (i + 8 <= len) {
      std::uint64_t v;
      std::memcpy(&v, s + i, 8);
      if ((v & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;        // overlong
      else if (c == 0xED) hi = 0x9F;   // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;        // overlong
      else if (c == 0xF4) hi = 0x8F;   // above U+10FFFF
    } else {
      return false;
    }
    if (i + n >= len) return false;  // truncated sequence
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (std::size_t j = 2; j <= n; ++j)
      if ((s[i + j] & 0xC0) != 0x80) return false;
    i += n + 1;
  }
  return true;
}

bool valid_close_code(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

void apply_mask(char* data, std::size_t len, const std::uint8_t key[4], std::size_t offset) {
  std::uint8_t k[4];
  for (std::size_t i = 0; i < 4; ++i) k[i] = key[(offset + i) & 3];
  std::size_t i = 0;
  if (len >= 16) {
    std::uint8_t k8[8] = {k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]};
    std::uint64_t k64;
    std::memcpy(&k64, k8, 8);
    for (; i + 8 <= len; i += 8) {
      std::uint64_t v;
      std::memcpy(&v, data + i, 8);
      v ^= k64;
      std::memcpy(data + i, &v, 8);
    }
  }
  for (; i < len; ++i) data[i] = static_cast<char>(data[i] ^ k[i & 3]);
}

std::size_t frame_header(char* out, std::uint8_t opcode, std::uint64_t len, bool fin, bool rsv1) {
  out[0] = static_cast<char>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
  if (len < 126) {
    out[1] = static_cast<char>(len);
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<char>((len >> 8) & 0xFF);
    out[3] = static_cast<char>(len & 0xFF);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<char>((len >> (56 - 8 * i)) & 0xFF);
  return 10;
}

void append_frame(std::string& out, std::uint8_t opcode, const char* data, std::size_t len) {
  char h[10];
  out.append(h, frame_header(h, opcode, len));
  out.append(data, len);
}

void append_close(std::string& out, int code, std::string_view reason) {
  if (code == kCloseNoStatus || code < 0 || code > 0xFFFF) {
    append_frame(out, kClose, "", 0);
    return;
  }
  if (reason.size() > kMaxControlPayload - 2) {
    reason = reason.substr(0, kMaxControlPayload - 2);
    // Do not cut a UTF-8 sequence in half.
    while (!reason.empty() && !valid_utf8(reason.data(), reason.size())) reason.remove_suffix(1);
  }
  char payload[kMaxControlPayload];
  payload[0] = static_cast<char>((code >> 8) & 0xFF);
  payload[1] = static_cast<char>(code & 0xFF);
  std::memcpy(payload + 2, reason.data(), reason.size());
  append_frame(out, kClose, payload, reason.size() + 2);
}

std::string client_frame(std::uint8_t opcode, std::string_view payload, bool fin, std::uint32_t mask,
                         std::uint8_t rsv) {
  std::string out;
  char h[10];
  const std::size_t n = frame_header(h, opcode, payload.size(), fin);
  h[0] = static_cast<char>(h[0] | ((rsv & 7) << 4));
  h[1] = static_cast<char>(h[1] | 0x80);
  out.append(h, n);
  const std::uint8_t key[4] = {static_cast<std::uint8_t>(mask >> 24), static_cast<std::uint8_t>(mask >> 16),
                               static_cast<std::uint8_t>(mask >> 8), static_cast<std::uint8_t>(mask)};
  out.append(reinterpret_cast<const char*>(key), 4);
  const std::size_t start = out.size();
  out.append(payload);
  apply_mask(out.data() + start, payload.size(), key, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Handshake checks
// ---------------------------------------------------------------------------------------------------------------

namespace {

bool is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

}  // namespace

bool is_websocket_upgrade(const RequestHead& head) {
  if (!head.upgrade) return false;
  bool websocket = false, connection_upgrade = false;
  for (const auto& h : head.headers) {
    const std::string_view name = head.str(h.first);
    if (name == "upgrade") websocket = ascii_iequals(trim_ows(head.str(h.second)), "websocket");
    else if (name == "connection" && list_has_token(head.str(h.second), "upgrade")) connection_upgrade = true;
  }
  return websocket && connection_upgrade;
}

int check_handshake(const RequestHead& head, const char** reason) {
  if (head.method != HTTP_GET) {
    *reason = "unsupported HTTP method";
    return 405;
  }
  std::string_view key, version;
  int keys = 0, versions = 0;
  for (const auto& h : head.headers) {
    const std::string_view name = head.str(h.first);
    if (name == "sec-websocket-key") {
      key = trim_ows(head.str(h.second));
      ++keys;
    } else if (name == "sec-websocket-version") {
      version = trim_ows(head.str(h.second));
      ++versions;
    }
  }
  if (keys == 0) {
    *reason = "missing Sec-WebSocket-Key header";
    return 400;
  }
  if (keys > 1) {
    *reason = "invalid Sec-WebSocket-Key header: multiple values";
    return 400;
  }
  // base64 of 16 bytes: 22 symbols and "==".
  bool key_ok = key.size() == 24 && key[22] == '=' && key[23] == '=';
  for (std::size_t i = 0; key_ok && i < 22; ++i) key_ok = is_b64(key[i]);
  if (!key_ok) {
    *reason = "invalid Sec-WebSocket-Key header";
    return 400;
  }
  if (versions == 0) {
    *reason = "missing Sec-WebSocket-Version header";
    return 400;
  }
  if (versions > 1 || version != "13") {
    *reason = "invalid Sec-WebSocket-Version header";
    return 400;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// FrameParser
// ---------------------------------------------------------------------------------------------------------------

FrameResult FrameParser::fail(int code, const char* reason, std::size_t consumed) {
  done_ = true;
  FrameResult r;
  r.kind = FrameResult::kError;
  r.consumed = consumed;
  r.close_code = code;
  r.reason = reason;
  return r;
}

int FrameParser::start_frame(const char** reason) {
  const std::uint8_t b0 = hdr_[0], b1 = hdr_[1];
  fin_ = (b0 & 0x80) != 0;
  opcode_ = b0 & 0x0F;
  hdr_len_ = 0;
  hdr_need_ = 2;
  // RSV1 is permessage-deflate's "compressed" bit, valid only where it was negotiated and only on the first frame
  // of a data message (RFC 7692 6.1); RSV2 and RSV3 are never used.
  const bool rsv1 = (b0 & 0x40) != 0;
  if ((b0 & 0x30) != 0 || (rsv1 && (inflater_ == nullptr || (opcode_ != kText && opcode_ != kBinary &&
                                                                opcode_ != kCont)))) {
    *reason = "reserved bits must be 0";
    return kCloseProtocolError;
  }
  if (rsv1 && opcode_ == kCont) {
    *reason = message_compressed_ ? "RSV1 bit set in continuation frame" : "reserved bits must be 0";
    return kCloseProtocolError;
  }
  if ((b1 & 0x80) == 0) {
    *reason = "incorrect masking";
    return kCloseProtocolError;
  }
  std::uint64_t len = b1 & 0x7F;
  std::size_t p = 2;
  if (len == 126) {
    len = (static_cast<std::uint64_t>(hdr_[2]) << 8) | hdr_[3];
    p = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | hdr_[2 + i];
    p = 10;
    if (len >> 63) {
      *reason = "invalid payload length";
      return kCloseProtocolError;
    }
  }
  std::memcpy(mask_, hdr_ + p, 4);
  remaining_ = len;
  payload_pos_ = 0;
  if (opcode_ >= 0x8) {
    if (opcode_ != kClose && opcode_ != kPing && opcode_ != kPong) {
      *reason = "invalid opcode";
      return kCloseProtocolError;
    }
    if (!fin_) {
      *reason = "fragmented control frame";
      return kCloseProtocolError;
    }
    if (len > kMaxControlPayload) {
      *reason = "control frame too long";
      return kCloseProtocolError;
    }
    return 0;
  }
  if (opcode_ == kCont) {
    if (!in_message_) {
      *reason = "unexpected continuation frame";
      return kCloseProtocolError;
    }
    // A compressed frame may not be longer than what is left of the limit either (as websockets checks it).
    if (len > max_message_ - (message_compressed_ ? inflater_->size() : message_.size())) {
      *reason = "message too big";
      return kCloseTooBig;
    }
  } else if (opcode_ == kText || opcode_ == kBinary) {
    if (in_message_) {
      *reason = "expected a continuation frame";
      return kCloseProtocolError;
    }
    if (len > max_message_) {
      *reason = "message too big";
      return kCloseTooBig;
    }
    message_text_ = opcode_ == kText;
    message_compressed_ = rsv1;
    message_.clear();
    in_message_ = true;
  } else {
    *reason = "invalid opcode";
    return kCloseProtocolError;
  }
  return 0;
}

int FrameParser::finish_frame(const char* payload, std::size_t len, const char** reason) {
  switch (opcode_) {
    case kPing:
      listener_->on_ws_ping(payload, len);
      return FrameListener::kMsgContinue;
    case kPong:
      listener_->on_ws_pong(payload, len);
      return FrameListener::kMsgContinue;
    case kClose: {
      int code = kCloseNoStatus;
      std::string_view text;
      if (len == 1) {
        *reason = "invalid close frame";
        return kCloseProtocolError;
      }
      if (len >= 2) {
        code = (static_cast<std::uint8_t>(payload[0]) << 8) | static_cast<std::uint8_t>(payload[1]);
        if (!valid_close_code(code)) {
          *reason = "invalid close code";
          return kCloseProtocolError;
        }
        text = std::string_view(payload + 2, len - 2);
        if (!valid_utf8(text.data(), text.size())) {
          *reason = "invalid UTF-8 in close reason";
          return kCloseInvalidData;
        }
      }
      done_ = true;
      listener_->on_ws_close(code, text);
      return -1;
    }
    default:
      break;
  }
  if (!fin_) return FrameListener::kMsgContinue;  // fragment appended to message_ (or fed to inflater_)
  in_message_ = false;
  if (message_compressed_) {
    // The payload was fed to the inflater as it arrived: the message is the inflated bytes.
    if (const int code = inflater_->finish(reason)) return code;
    payload = inflater_->data();
    len = inflater_->size();
  }
  if (message_text_ && !valid_utf8(payload, len)) {
    *reason = "invalid UTF-8";
    return kCloseInvalidData;
  }
  const int r = listener_->on_ws_message(message_text_, payload, len);
  message_.clear();
  if (message_compressed_) {
    inflater_->end_message();
    message_compressed_ = false;
  }
  return r;
}

FrameResult FrameParser::execute(char* data, std::size_t len) {
  FrameResult res;
  if (done_) {
    res.kind = FrameResult::kClosed;
    return res;
  }
  std::size_t pos = 0;
  const char* reason = "";
  for (;;) {
    const char* payload = nullptr;
    std::size_t payload_len = 0;
    if (!in_payload_) {
      if (pos >= len) break;
      while (hdr_len_ < hdr_need_ && pos < len) {
        hdr_[hdr_len_++] = static_cast<std::uint8_t>(data[pos++]);
        if (hdr_len_ == 2) {
          const std::uint8_t l7 = hdr_[1] & 0x7F;
          hdr_need_ = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((hdr_[1] & 0x80) ? 4 : 0);
        }
      }
      if (hdr_len_ < hdr_need_) break;
      if (const int code = start_frame(&reason)) return fail(code, reason, pos);
      const bool data_frame = opcode_ < 0x8;
      if (data_frame && fin_ && opcode_ != kCont && remaining_ <= len - pos) {
        // The whole message is here: unmask in place and hand it out without copying (or inflate it from here).
        payload = data + pos;
        payload_len = static_cast<std::size_t>(remaining_);
        apply_mask(data + pos, payload_len, mask_, 0);
        pos += payload_len;
        remaining_ = 0;
        if (message_compressed_) {
          if (const int code = inflater_->feed(payload, payload_len, &reason)) return fail(code, reason, pos);
          payload = nullptr;
          payload_len = 0;
        }
      } else if (remaining_ == 0) {
        payload = data_frame ? message_.data() : control_;
        payload_len = data_frame ? message_.size() : 0;
      } else {
        in_payload_ = true;
        continue;
      }
    } else {
      if (pos >= len) break;
      const std::size_t take = static_cast<std::size_t>(
          remaining_ < static_cast<std::uint64_t>(len - pos) ? remaining_ : static_cast<std::uint64_t>(len - pos));
      apply_mask(data + pos, take, mask_, payload_pos_);
      if (opcode_ >= 0x8) {
        std::memcpy(control_ + payload_pos_, data + pos, take);
      } else if (message_compressed_) {
        // Inflated as it arrives: the compressed bytes are never buffered, the inflated ones are bounded.
        if (const int code = inflater_->feed(data + pos, take, &reason)) return fail(code, reason, pos + take);
      } else {
        message_.append(data + pos, take);
      }
      payload_pos_ += take;
      remaining_ -= take;
      pos += take;
      if (remaining_ > 0) break;
      in_payload_ = false;
      if (opcode_ >= 0x8) {
        payload = control_;
        payload_len = payload_pos_;
      } else {
        payload = message_.data();
        payload_len = message_.size();
      }
    }
    const int r = finish_frame(payload, payload_len, &reason);
    if (r == -1) {
      res.kind = FrameResult::kClosed;
      res.consumed = pos;
      return res;
    }
    if (r > FrameListener::kMsgPause) return fail(r, reason, pos);
    if (r == FrameListener::kMsgPause) {
      res.kind = FrameResult::kPaused;
      res.consumed = pos;
      return res;
    }
  }
  res.consumed = pos;
  return res;
}

}  // namespace fa::ws
