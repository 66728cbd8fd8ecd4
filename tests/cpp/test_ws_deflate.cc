// permessage-deflate (http/ws_deflate.*, and the frame parser's RSV1 handling in http/websocket.*): negotiation as
// the websockets library answers each offer (the expected values below are what websockets 15-17 with uvicorn's
// settings return), compression round trips with and without context takeover, compatibility with plain zlib both
// ways, the bound on inflated output (a deflate bomb), corrupt data, and the RSV1 rules.
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/websocket.h"
#include "http/ws_deflate.h"

namespace ws = fa::ws;

namespace {

struct Outcome {
  ws::Negotiation kind;
  std::string response;
  ws::DeflateParams params;
};

Outcome negotiate(std::vector<std::string_view> values) {
  Outcome o{ws::Negotiation::kNone, "", {}};
  o.kind = ws::negotiate_deflate(values.data(), values.size(), &o.params, &o.response);
  return o;
}

// Raw deflate of `data` with a sync flush, the tail removed: what a client sends (RFC 7692 7.2.1).
std::string client_deflate(const std::string& data, int level = 6) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
  REQUIRE(z.avail_in == 0);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  REQUIRE(out.size() >= 4);
  REQUIRE(out.compare(out.size() - 4, 4, std::string("\x00\x00\xff\xff", 4)) == 0);
  out.resize(out.size() - 4);
  return out;
}

// What a client's inflater makes of the server's messages (one stream, context kept), tail put back.
struct ClientInflater {
  z_stream z{};
  explicit ClientInflater(int bits) { REQUIRE(inflateInit2(&z, -bits) == Z_OK); }
  ~ClientInflater() { inflateEnd(&z); }
  std::string inflate_message(std::string compressed) {
    compressed.append("\x00\x00\xff\xff", 4);
    std::string out;
    z.next_in = reinterpret_cast<Bytef*>(compressed.data());
    z.avail_in = static_cast<uInt>(compressed.size());
    char buf[4096];
    do {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      const int rc = ::inflate(&z, Z_SYNC_FLUSH);
      REQUIRE((rc == Z_OK || rc == Z_BUF_ERROR));
      out.append(buf, sizeof buf - z.avail_out);
    } while (z.avail_in > 0 || z.avail_out == 0);
    return out;
  }
};

std::string compress_with(ws::Deflater& d, const std::string& msg) {
  ws::ByteBuffer out;
  REQUIRE(d.compress(msg.data(), msg.size(), out));
  return std::string(out.data(), out.size());
}

// Feed `compressed` to the inflater in pieces of `step`; returns the close code (0: the message).
int inflate_in_pieces(ws::Inflater& inf, const std::string& compressed, std::size_t step, std::string* message) {
  const char* reason = "";
  for (std::size_t i = 0; i < compressed.size(); i += step) {
    const std::size_t n = compressed.size() - i < step ? compressed.size() - i : step;
    if (const int code = inf.feed(compressed.data() + i, n, &reason)) return code;
  }
  if (const int code = inf.finish(&reason)) return code;
  message->assign(inf.data(), inf.size());
  inf.end_message();
  return 0;
}

std::string text_corpus(std::size_t n) {
  std::string s;
  std::uint32_t x = 12345;
  while (s.size() < n) {
    x = x * 1103515245u + 12345u;
    s += "{\"id\": " + std::to_string(x % 1000) + ", \"name\": \"item\", \"tags\": [\"a\", \"b\"]}\n";
  }
  s.resize(n);
  return s;
}

std::string pseudo_random(std::size_t n) {
  std::string s(n, '\0');
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return s;
}

struct Recorder : ws::FrameListener {
  std::vector<std::string> messages;
  std::vector<bool> texts;
  int on_ws_message(bool text, const char* data, std::size_t len) override {
    messages.emplace_back(data, len);
    texts.push_back(text);
    return kMsgContinue;
  }
  void on_ws_ping(const char*, std::size_t) override {}
  void on_ws_pong(const char*, std::size_t) override {}
  void on_ws_close(int, std::string_view) override {}
};

std::unique_ptr<ws::Inflater> inflater(std::size_t max, bool nct = false) {
  return std::make_unique<ws::Inflater>(15, nct, max);
}

ws::FrameResult feed(ws::FrameParser& p, std::string bytes) {
  return p.execute(bytes.data(), bytes.size());
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("deflate negotiation: the answers websockets gives with uvicorn's settings") {
  struct Case {
    std::vector<std::string_view> offer;
    const char* response;  // nullptr: declined
  };
  const std::vector<Case> cases = {
      // Browsers and the websockets client.
      {{"permessage-deflate; client_max_window_bits"},
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"},
      {{"permessage-deflate"}, "permessage-deflate; server_max_window_bits=12"},
      {{"permessage-deflate; server_max_window_bits=10"}, "permessage-deflate; server_max_window_bits=10"},
      {{"permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"},
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"},
      // server_max_window_bits=8 cannot be served (zlib): that offer is declined, the next one taken.
      {{"permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9"},
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"},
      {{"permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
       "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"},
      {{"permessage-deflate; foo=1, permessage-deflate"}, "permessage-deflate; server_max_window_bits=12"},
      {{"permessage-deflate; server_no_context_takeover=1"}, nullptr},
      {{"permessage-deflate; client_max_window_bits; client_max_window_bits"}, nullptr},
      {{"x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=\"10\""},
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"},
      {{"permessage-deflate; server_max_window_bits=7"}, nullptr},
      {{"permessage-deflate; server_max_window_bits=08"}, nullptr},
      {{",, permessage-deflate ,"}, "permessage-deflate; server_max_window_bits=12"},
      {{"foo", "permessage-deflate; client_max_window_bits=8"},
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8"},
      {{"permessage-deflate, permessage-deflate; server_no_context_takeover"},
       "permessage-deflate; server_max_window_bits=12"},
      {{"Permessage-Deflate"}, nullptr},  // extension names are compared exactly
      {{"x-other; a=1"}, nullptr},
  };
  for (const Case& c : cases) {
    const Outcome o = negotiate(c.offer);
    INFO(std::string(c.offer[0]));
    if (c.response == nullptr) {
      CHECK(o.kind == ws::Negotiation::kNone);
    } else {
      CHECK(o.kind == ws::Negotiation::kAccepted);
      CHECK(o.response == c.response);
    }
  }
  const Outcome o = negotiate({"permessage-deflate; client_no_context_takeover; client_max_window_bits=9"});
  CHECK(o.params.client_no_context_takeover);
  CHECK_FALSE(o.params.server_no_context_takeover);
  CHECK(o.params.client_max_window_bits == 9);
  CHECK(o.params.server_max_window_bits == 12);
  CHECK(negotiate({"permessage-deflate"}).params.client_max_window_bits == 15);  // the client's window is its own
}

TEST_CASE("deflate negotiation: syntax errors with websockets' wording and positions") {
  struct Case {
    std::string_view value;
    const char* error;
  };
  const std::vector<Case> cases = {
      {";", "invalid Sec-WebSocket-Extensions header: expected token at 0 in ;"},
      {"permessage-deflate;", "invalid Sec-WebSocket-Extensions header: expected token at 19 in permessage-deflate;"},
      {"permessage-deflate x", "invalid Sec-WebSocket-Extensions header: expected comma at 19 in permessage-deflate x"},
      {"permessage-deflate; a=\"b c\"",
       "invalid Sec-WebSocket-Extensions header: invalid quoted header content at 22 in permessage-deflate; a=\"b c\""},
      {"permessage-deflate; a=\"b",
       "invalid Sec-WebSocket-Extensions header: expected quoted string at 22 in permessage-deflate; a=\"b"},
      {"", "invalid Sec-WebSocket-Extensions header: expected token at 0 in "},
  };
  for (const Case& c : cases) {
    // A bad value anywhere fails the whole header, even after an acceptable offer.
    const Outcome o = negotiate({"permessage-deflate", c.value});
    INFO(std::string(c.value));
    CHECK(o.kind == ws::Negotiation::kInvalidHeader);
    CHECK(o.response == c.error);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Compression and decompression
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("deflate: server messages inflate with plain zlib, context kept across messages") {
  ws::Deflater d(12, false);
  ClientInflater client(12);
  const std::string big = text_corpus(300 * 1024);
  const std::vector<std::string> msgs = {"hello", "", big, "hello", std::string(1, '\0'), pseudo_random(70000), big};
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    const std::string z = compress_with(d, msgs[i]);
    CHECK(client.inflate_message(z) == msgs[i]);
    if (i == 2) CHECK(z.size() < big.size() / 4);
  }
  // An empty message is an empty stored block, as Python's zlib makes it.
  ws::Deflater fresh(12, false);
  compress_with(fresh, "abc");
  CHECK(compress_with(fresh, "") == std::string(1, '\0'));
}

TEST_CASE("deflate: server_no_context_takeover makes every message independent") {
  ws::Deflater d(15, true);
  const std::string msg = text_corpus(2000);
  const std::string first = compress_with(d, msg);
  const std::string second = compress_with(d, msg);
  CHECK(first == second);  // nothing taken from the previous message
  ClientInflater fresh(15);
  CHECK(fresh.inflate_message(second) == msg);
  ws::Deflater kept(15, false);
  compress_with(kept, msg);
  CHECK(compress_with(kept, msg).size() < first.size() / 4);  // with takeover the repeat is a few back-references
}

TEST_CASE("inflate: client messages in any split, context kept or reset") {
  for (bool nct : {false, true}) {
    ws::Inflater inf(15, nct, 1 << 20);
    z_stream z{};
    REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    const std::vector<std::string> msgs = {text_corpus(5000), "short", text_corpus(5000), pseudo_random(3000), ""};
    for (std::size_t step : {std::size_t{1}, std::size_t{7}, std::size_t{100000}}) {
      for (const std::string& m : msgs) {
        if (nct) deflateReset(&z);
        std::string out(deflateBound(&z, m.size()) + 64, '\0');
        if (m.empty()) {  // zlib skips a flush right after a flush unless told "no flush" in between
          z.avail_in = 0;
          z.next_out = reinterpret_cast<Bytef*>(out.data());
          z.avail_out = static_cast<uInt>(out.size());
          deflate(&z, Z_NO_FLUSH);
        }
        z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(m.data()));
        z.avail_in = static_cast<uInt>(m.size());
        z.next_out = reinterpret_cast<Bytef*>(out.data());
        z.avail_out = static_cast<uInt>(out.size());
        REQUIRE(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
        out.resize(out.size() - z.avail_out - 4);  // without the tail
        std::string got;
        INFO("no_context_takeover " << nct << ", pieces of " << step << ", message of " << m.size());
        REQUIRE(inflate_in_pieces(inf, out, step, &got) == 0);
        CHECK(got == m);
      }
    }
    deflateEnd(&z);
  }
}

TEST_CASE("inflate: the limit applies to the inflated size, and bounds the memory (deflate bomb)") {
  SECTION("exactly at the limit, then one byte over") {
    const std::string m(1000, 'a');
    ws::Inflater at(15, true, 1000);
    std::string got;
    CHECK(inflate_in_pieces(at, client_deflate(m), 3, &got) == 0);
    CHECK(got == m);
    ws::Inflater over(15, true, 999);
    CHECK(inflate_in_pieces(over, client_deflate(m), 3, &got) == ws::kCloseTooBig);
  }
  SECTION("64 MiB of zeros in ~64 KiB of input, limit 1 MiB: refused, output never above the limit + 1") {
    const std::string zeros(64u << 20, '\0');
    const std::string bomb = client_deflate(zeros, 9);
    CHECK(bomb.size() < 128 * 1024);
    const std::size_t limit = 1 << 20;
    ws::Inflater inf(15, false, limit);
    const char* reason = "";
    int code = 0;
    for (std::size_t i = 0; i < bomb.size() && code == 0; i += 4096) {
      code = inf.feed(bomb.data() + i, bomb.size() - i < 4096 ? bomb.size() - i : 4096, &reason);
      CHECK(inf.capacity() <= limit + 1);
    }
    CHECK(code == ws::kCloseTooBig);
    CHECK(std::string(reason) == "message too big");
    CHECK(inf.capacity() <= limit + 1);
  }
  SECTION("a bomb whose compressed bytes all fit one small read") {
    const std::string bomb = client_deflate(std::string(16u << 20, 'x'), 9);
    ws::Inflater inf(15, false, 4096);
    const char* reason = "";
    CHECK(inf.feed(bomb.data(), bomb.size(), &reason) == ws::kCloseTooBig);
    CHECK(inf.capacity() <= 4097);
  }
}

TEST_CASE("inflate: data that are not deflate fail with 1002") {
  ws::Inflater inf(15, false, 1 << 20);
  const char* reason = "";
  const std::string junk("\xff\xff\xff\xff\xff\xff", 6);  // BTYPE 11 is reserved
  int code = inf.feed(junk.data(), junk.size(), &reason);
  if (code == 0) code = inf.finish(&reason);
  CHECK(code == ws::kCloseProtocolError);
  CHECK(std::string(reason) == "decompression failed");
}

// ---------------------------------------------------------------------------------------------------------------
// The frame parser with permessage-deflate
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("frames: RSV1 marks a compressed message, fragments inflate as they arrive") {
  Recorder r;
  ws::FrameParser p(&r, 1 << 20);
  p.set_inflater(inflater(1 << 20));
  const std::string text = text_corpus(20000);
  const std::string z = client_deflate(text);
  std::string wire = ws::client_frame(ws::kText, z, true, 0x11223344, 4);  // RSV1
  wire += ws::client_frame(ws::kBinary, "plain", true);                    // uncompressed messages stay allowed
  // A compressed message in three fragments: RSV1 on the first only.
  const std::string z2 = client_deflate("fragmented message, fragmented message");
  wire += ws::client_frame(ws::kBinary, z2.substr(0, 5), false, 1, 4);
  wire += ws::client_frame(ws::kCont, z2.substr(5, 10), false, 2, 0);
  wire += ws::client_frame(ws::kCont, z2.substr(15), true, 3, 0);
  SECTION("whole") {
    CHECK(feed(p, wire).kind == ws::FrameResult::kOk);
  }
  SECTION("byte by byte") {
    for (char c : wire) REQUIRE(feed(p, std::string(1, c)).kind == ws::FrameResult::kOk);
  }
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[0] == text);
  CHECK(r.texts[0]);
  CHECK(r.messages[1] == "plain");
  CHECK(r.messages[2] == "fragmented message, fragmented message");
}

TEST_CASE("frames: RSV1 rules (RFC 7692 6.1)") {
  struct Case {
    std::string wire;
    bool negotiated;
    const char* reason;
  };
  const std::string z = client_deflate("abc");
  const std::vector<Case> cases = {
      {ws::client_frame(ws::kText, z, true, 1, 4), false, "reserved bits must be 0"},   // not negotiated
      {ws::client_frame(ws::kPing, "x", true, 1, 4), true, "reserved bits must be 0"},  // control frame
      {ws::client_frame(ws::kText, z, true, 1, 2), true, "reserved bits must be 0"},    // RSV2
      {ws::client_frame(ws::kText, z.substr(0, 2), false, 1, 4) + ws::client_frame(ws::kCont, z.substr(2), true, 1, 4),
       true, "RSV1 bit set in continuation frame"},
      {ws::client_frame(ws::kText, "ab", false, 1, 0) + ws::client_frame(ws::kCont, "c", true, 1, 4), true,
       "reserved bits must be 0"},
  };
  for (const Case& c : cases) {
    Recorder r;
    ws::FrameParser p(&r, 1 << 20);
    if (c.negotiated) p.set_inflater(inflater(1 << 20));
    const ws::FrameResult res = feed(p, c.wire);
    CHECK(res.kind == ws::FrameResult::kError);
    CHECK(res.close_code == ws::kCloseProtocolError);
    CHECK(std::string(res.reason) == c.reason);
    CHECK(r.messages.empty());
  }
}

TEST_CASE("frames: a small compressed frame that inflates past the limit fails with 1009") {
  const std::string bomb = client_deflate(std::string(8u << 20, 'a'), 9);
  REQUIRE(bomb.size() < 16 * 1024);
  const std::string wire = ws::client_frame(ws::kBinary, bomb, true, 7, 4);
  for (std::size_t step : {wire.size(), std::size_t{1000}}) {
    Recorder r;
    ws::FrameParser p(&r, 64 * 1024);
    auto inf = inflater(64 * 1024);
    const ws::Inflater* seen = inf.get();
    p.set_inflater(std::move(inf));
    ws::FrameResult res;
    for (std::size_t i = 0; i < wire.size(); i += step) {
      res = feed(p, wire.substr(i, step));
      if (res.kind != ws::FrameResult::kOk) break;
    }
    CHECK(res.kind == ws::FrameResult::kError);
    CHECK(res.close_code == ws::kCloseTooBig);
    CHECK(seen->capacity() <= 64 * 1024 + 1);
    CHECK(r.messages.empty());
  }
}

TEST_CASE("frames: compressed text is validated as UTF-8 after inflation") {
  Recorder r;
  ws::FrameParser p(&r, 1 << 20);
  p.set_inflater(inflater(1 << 20));
  const ws::FrameResult res = feed(p, ws::client_frame(ws::kText, client_deflate("ok \xff\xfe"), true, 5, 4));
  CHECK(res.kind == ws::FrameResult::kError);
  CHECK(res.close_code == ws::kCloseInvalidData);
}
