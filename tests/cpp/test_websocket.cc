// WebSocket framing (http/websocket.*): frame parse/serialise, masking, fragmentation, the three length encodings,
// split input, pausing, protocol errors with their close codes, UTF-8 and close-code validation, handshake checks.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <llhttp.h>

#include "catch_compat.h"
#include "http/websocket.h"

namespace ws = fa::ws;

namespace {

struct Event {
  std::string kind;  // "text", "binary", "ping", "pong", "close"
  std::string data;
  int code = 0;
  bool operator==(const Event& o) const { return kind == o.kind && data == o.data && code == o.code; }
};

struct Recorder : ws::FrameListener {
  std::vector<Event> events;
  bool pause_after_message = false;
  int on_ws_message(bool text, const char* data, std::size_t len) override {
    events.push_back({text ? "text" : "binary", std::string(data, len), 0});
    return pause_after_message ? kMsgPause : kMsgContinue;
  }
  void on_ws_ping(const char* data, std::size_t len) override { events.push_back({"ping", std::string(data, len), 0}); }
  void on_ws_pong(const char* data, std::size_t len) override { events.push_back({"pong", std::string(data, len), 0}); }
  void on_ws_close(int code, std::string_view reason) override {
    events.push_back({"close", std::string(reason), code});
  }
};

ws::FrameResult feed(ws::FrameParser& p, std::string bytes) { return p.execute(bytes.data(), bytes.size()); }

// Feed `bytes` in pieces of `step` bytes; returns the last result.
ws::FrameResult feed_split(ws::FrameParser& p, const std::string& bytes, std::size_t step) {
  ws::FrameResult r;
  for (std::size_t i = 0; i < bytes.size(); i += step) {
    std::string piece = bytes.substr(i, step);
    r = p.execute(piece.data(), piece.size());
    if (r.kind != ws::FrameResult::kOk) return r;
    REQUIRE(r.consumed == piece.size());
  }
  return r;
}

std::string close_payload(int code, std::string_view reason = "") {
  std::string s;
  s += static_cast<char>(code >> 8);
  s += static_cast<char>(code & 0xFF);
  s += reason;
  return s;
}

}  // namespace

TEST_CASE("websocket: server frame headers use the shortest length encoding") {
  char h[10];
  CHECK(ws::frame_header(h, ws::kText, 0) == 2);
  CHECK(static_cast<unsigned char>(h[0]) == 0x81);
  CHECK(h[1] == 0);
  CHECK(ws::frame_header(h, ws::kBinary, 125) == 2);
  CHECK(static_cast<unsigned char>(h[0]) == 0x82);
  CHECK(h[1] == 125);
  CHECK(ws::frame_header(h, ws::kBinary, 126) == 4);
  CHECK(h[1] == 126);
  CHECK(static_cast<unsigned char>(h[2]) == 0);
  CHECK(static_cast<unsigned char>(h[3]) == 126);
  CHECK(ws::frame_header(h, ws::kBinary, 65535) == 4);
  CHECK(ws::frame_header(h, ws::kBinary, 65536) == 10);
  CHECK(h[1] == 127);
  CHECK(static_cast<unsigned char>(h[7]) == 1);  // 0x0000000000010000
  CHECK(static_cast<unsigned char>(h[8]) == 0);
  CHECK(ws::frame_header(h, ws::kText, 5, false) == 2);
  CHECK(static_cast<unsigned char>(h[0]) == 0x01);  // FIN clear
}

TEST_CASE("websocket: server frames are unmasked; close frames carry code and reason") {
  std::string out;
  ws::append_frame(out, ws::kText, "Hello", 5);
  CHECK(out == std::string("\x81\x05Hello", 7));
  out.clear();
  ws::append_close(out, 1000, "bye");
  CHECK(out == std::string("\x88\x05\x03\xe8" "bye", 7));
  out.clear();
  ws::append_close(out, ws::kCloseNoStatus, "ignored");
  CHECK(out == std::string("\x88\x00", 2));
  out.clear();
  ws::append_close(out, 1000, std::string(200, 'r'));  // reason cut to fit a control frame
  CHECK(out.size() == 2 + 125);
}

TEST_CASE("websocket: masking is an involution at any key offset") {
  const std::uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7);
  for (std::size_t offset : {0u, 1u, 2u, 3u, 5u}) {
    std::string copy = data;
    ws::apply_mask(copy.data(), copy.size(), key, offset);
    CHECK(copy != data);
    // Byte i is XORed with key[(offset + i) % 4], whatever the chunking.
    for (std::size_t i = 0; i < 40; ++i)
      CHECK(static_cast<std::uint8_t>(copy[i] ^ data[i]) == key[(offset + i) % 4]);
    ws::apply_mask(copy.data(), 17, key, offset);
    ws::apply_mask(copy.data() + 17, copy.size() - 17, key, offset + 17);
    CHECK(copy == data);
  }
  // RFC 6455 5.7: a single-frame masked text "Hello".
  Recorder rec;
  ws::FrameParser p(&rec, 1 << 20);
  const auto r = feed(p, std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
  CHECK(r.kind == ws::FrameResult::kOk);
  CHECK(r.consumed == 11);
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0] == Event{"text", "Hello", 0});
}

TEST_CASE("websocket: 7-, 16- and 64-bit payload lengths, whole and split byte by byte") {
  for (std::size_t n : {0u, 1u, 125u, 126u, 127u, 65535u, 65536u, 70000u}) {
    std::string payload(n, '\0');
    for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<char>('a' + i % 26);
    const std::string frame = ws::client_frame(ws::kBinary, payload);
    for (std::size_t step : {frame.size(), std::size_t{1}, std::size_t{7}, std::size_t{4096}}) {
      CAPTURE(n, step);
      Recorder rec;
      ws::FrameParser p(&rec, 1 << 20);
      const auto r = feed_split(p, frame, step);
      CHECK(r.kind == ws::FrameResult::kOk);
      REQUIRE(rec.events.size() == 1);
      CHECK(rec.events[0] == Event{"binary", payload, 0});
    }
  }
}

TEST_CASE("websocket: fragmented messages are reassembled; control frames may interleave") {
  const std::string bytes = ws::client_frame(ws::kText, "Hel", false) + ws::client_frame(ws::kPing, "p1") +
                            ws::client_frame(ws::kCont, "lo \xe2\x9c", false) +  // UTF-8 split across fragments
                            ws::client_frame(ws::kCont, "\x93", true) + ws::client_frame(ws::kPong, "p2") +
                            ws::client_frame(ws::kBinary, std::string("\x00\x01", 2));
  for (std::size_t step : {bytes.size(), std::size_t{1}, std::size_t{3}}) {
    CAPTURE(step);
    Recorder rec;
    ws::FrameParser p(&rec, 1 << 20);
    CHECK(feed_split(p, bytes, step).kind == ws::FrameResult::kOk);
    REQUIRE(rec.events.size() == 4);
    CHECK(rec.events[0] == Event{"ping", "p1", 0});
    CHECK(rec.events[1] == Event{"text", "Hello \xe2\x9c\x93", 0});
    CHECK(rec.events[2] == Event{"pong", "p2", 0});
    CHECK(rec.events[3] == Event{"binary", std::string("\x00\x01", 2), 0});
    CHECK_FALSE(p.in_message());
  }
}

TEST_CASE("websocket: close frames stop parsing and report code and reason") {
  Recorder rec;
  ws::FrameParser p(&rec, 1 << 20);
  const std::string bytes = ws::client_frame(ws::kText, "a") +
                            ws::client_frame(ws::kClose, close_payload(4001, "bye")) +
                            ws::client_frame(ws::kText, "after");
  const auto r = feed(p, bytes);
  CHECK(r.kind == ws::FrameResult::kClosed);
  CHECK(r.consumed == bytes.size() - ws::client_frame(ws::kText, "after").size());
  REQUIRE(rec.events.size() == 2);
  CHECK(rec.events[1] == Event{"close", "bye", 4001});
  CHECK(feed(p, ws::client_frame(ws::kText, "x")).kind == ws::FrameResult::kClosed);

  Recorder rec2;
  ws::FrameParser p2(&rec2, 1 << 20);
  CHECK(feed(p2, ws::client_frame(ws::kClose, "")).kind == ws::FrameResult::kClosed);
  REQUIRE(rec2.events.size() == 1);
  CHECK(rec2.events[0] == Event{"close", "", ws::kCloseNoStatus});
}

TEST_CASE("websocket: a paused listener stops after the message; the rest parses later") {
  Recorder rec;
  rec.pause_after_message = true;
  ws::FrameParser p(&rec, 1 << 20);
  std::string bytes = ws::client_frame(ws::kText, "one") + ws::client_frame(ws::kText, "two");
  auto r = p.execute(bytes.data(), bytes.size());
  CHECK(r.kind == ws::FrameResult::kPaused);
  CHECK(r.consumed == ws::client_frame(ws::kText, "one").size());
  REQUIRE(rec.events.size() == 1);
  std::string rest = bytes.substr(r.consumed);
  r = p.execute(rest.data(), rest.size());
  CHECK(r.kind == ws::FrameResult::kPaused);
  CHECK(r.consumed == rest.size());
  REQUIRE(rec.events.size() == 2);
  CHECK(rec.events[1] == Event{"text", "two", 0});
}

TEST_CASE("websocket: protocol errors map to close codes") {
  struct Case {
    const char* name;
    std::string bytes;
    int code;
  };
  std::string unmasked = ws::client_frame(ws::kText, "hi");
  unmasked[1] = static_cast<char>(unmasked[1] & 0x7F);
  unmasked.erase(2, 4);
  std::string huge_len = std::string("\x82\xff", 2) + std::string("\x80\0\0\0\0\0\0\0", 8) + std::string(4, '\0');
  const std::vector<Case> cases = {
      {"unmasked", unmasked, 1002},
      {"rsv bits", ws::client_frame(ws::kText, "x", true, 0x01020304, 4), 1002},
      {"unknown data opcode", ws::client_frame(0x3, "x"), 1002},
      {"unknown control opcode", ws::client_frame(0xB, "x"), 1002},
      {"fragmented control", ws::client_frame(ws::kPing, "x", false), 1002},
      {"long control", ws::client_frame(ws::kPing, std::string(126, 'x')), 1002},
      {"continuation first", ws::client_frame(ws::kCont, "x"), 1002},
      {"new message inside fragmented", ws::client_frame(ws::kText, "a", false) + ws::client_frame(ws::kText, "b"),
       1002},
      {"64-bit length with MSB", huge_len, 1002},
      {"invalid utf-8", ws::client_frame(ws::kText, "\xc3\x28"), 1007},
      {"utf-8 surrogate", ws::client_frame(ws::kText, "\xed\xa0\x80"), 1007},
      {"truncated utf-8 at end of fragmented", ws::client_frame(ws::kText, "a\xe2", false) +
                                                   ws::client_frame(ws::kCont, "\x9c"), 1007},
      {"close with 1-byte payload", ws::client_frame(ws::kClose, "\x03"), 1002},
      {"close code 1005", ws::client_frame(ws::kClose, close_payload(1005)), 1002},
      {"close code 999", ws::client_frame(ws::kClose, close_payload(999)), 1002},
      {"close code 2000", ws::client_frame(ws::kClose, close_payload(2000)), 1002},
      {"close reason invalid utf-8", ws::client_frame(ws::kClose, close_payload(1000, "\xff")), 1007},
      {"message too big", ws::client_frame(ws::kBinary, std::string(1025, 'x')), 1009},
      {"fragments too big", ws::client_frame(ws::kBinary, std::string(1000, 'x'), false) +
                                ws::client_frame(ws::kCont, std::string(25, 'x'), false) +
                                ws::client_frame(ws::kCont, std::string(1, 'x')),
       1009},
  };
  for (const auto& c : cases) {
    for (std::size_t step : {c.bytes.size(), std::size_t{1}}) {
      CAPTURE(c.name, step);
      Recorder rec;
      ws::FrameParser p(&rec, 1024);
      const auto r = feed_split(p, c.bytes, step);
      CHECK(r.kind == ws::FrameResult::kError);
      CHECK(r.close_code == c.code);
      CHECK(std::strlen(r.reason) > 0);
      for (const auto& e : rec.events) CHECK(e.kind != "close");
    }
  }
  // Exactly at the limit is fine.
  Recorder rec;
  ws::FrameParser p(&rec, 1024);
  CHECK(feed(p, ws::client_frame(ws::kBinary, std::string(1024, 'x'))).kind == ws::FrameResult::kOk);
  CHECK(rec.events.size() == 1);
}

TEST_CASE("websocket: UTF-8 validation") {
  CHECK(ws::valid_utf8("", 0));
  const std::string ok[] = {"plain ascii text that is longer than eight bytes", "h\xc3\xa9llo", "\xe2\x9c\x93",
                            "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf"};
  for (const auto& s : ok) CHECK(ws::valid_utf8(s.data(), s.size()));
  const std::string bad[] = {"\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                             "\xf5\x80\x80\x80", "\xff", "\xe2\x9c", "abcdefgh\xe2", "\xc3"};
  for (const auto& s : bad) {
    CAPTURE(s);
    CHECK_FALSE(ws::valid_utf8(s.data(), s.size()));
  }
}

TEST_CASE("websocket: close codes a peer may send") {
  for (int c : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999})
    CHECK(ws::valid_close_code(c));
  for (int c : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}) CHECK_FALSE(ws::valid_close_code(c));
}

TEST_CASE("websocket: handshake request checks") {
  auto head_with = [](int method, std::vector<std::pair<std::string, std::string>> headers) {
    fa::RequestHead h;
    h.method = method;
    h.upgrade = true;
    for (const auto& [n, v] : headers) {
      fa::Span name{h.arena.size(), n.size()};
      h.arena += n;
      fa::Span value{h.arena.size(), v.size()};
      h.arena += v;
      h.headers.push_back({name, value});
    }
    return h;
  };
  const std::pair<std::string, std::string> upgrade{"upgrade", "WebSocket"}, conn{"connection", "keep-alive, Upgrade"},
      key{"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="}, version{"sec-websocket-version", "13"};
  const char* reason = "";
  auto good = head_with(HTTP_GET, {upgrade, conn, key, version});
  CHECK(ws::is_websocket_upgrade(good));
  CHECK(ws::check_handshake(good, &reason) == 0);

  CHECK_FALSE(ws::is_websocket_upgrade(head_with(HTTP_GET, {{"upgrade", "h2c"}, conn, key, version})));
  CHECK_FALSE(ws::is_websocket_upgrade(head_with(HTTP_GET, {upgrade, {"connection", "close"}, key, version})));
  CHECK(ws::check_handshake(head_with(HTTP_POST, {upgrade, conn, key, version}), &reason) == 405);
  CHECK(ws::check_handshake(head_with(HTTP_GET, {upgrade, conn, version}), &reason) == 400);
  CHECK(std::string(reason) == "missing Sec-WebSocket-Key header");
  CHECK(ws::check_handshake(head_with(HTTP_GET, {upgrade, conn, key, key, version}), &reason) == 400);
  CHECK(ws::check_handshake(head_with(HTTP_GET, {upgrade, conn, {"sec-websocket-key", "short"}, version}), &reason) ==
        400);
  CHECK(ws::check_handshake(head_with(HTTP_GET, {upgrade, conn, key}), &reason) == 400);
  CHECK(ws::check_handshake(head_with(HTTP_GET, {upgrade, conn, key, {"sec-websocket-version", "8"}}), &reason) ==
        400);
}
