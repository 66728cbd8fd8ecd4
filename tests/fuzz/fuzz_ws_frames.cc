// libFuzzer target: the WebSocket frame parser, on client bytes split at a point chosen by the input and with the
// listener pausing after every message, without and with permessage-deflate (RSV1 frames inflated). Invariants:
// consumed never exceeds the input; text messages are valid UTF-8; control payloads fit 125 bytes; messages (the
// inflated ones too) never exceed the limit; nothing is parsed after close or error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "http/websocket.h"

namespace {

struct Listener final : fa::ws::FrameListener {
  std::size_t max = 0;
  bool pause = false;
  bool closed = false;
  int on_ws_message(bool text, const char* data, std::size_t len) override {
    if (closed || len > max || (text && !fa::ws::valid_utf8(data, len))) std::abort();
    return pause ? kMsgPause : kMsgContinue;
  }
  void on_ws_ping(const char*, std::size_t len) override {
    if (closed || len > fa::ws::kMaxControlPayload) std::abort();
  }
  void on_ws_pong(const char*, std::size_t len) override {
    if (closed || len > fa::ws::kMaxControlPayload) std::abort();
  }
  void on_ws_close(int code, std::string_view reason) override {
    if (closed || reason.size() > fa::ws::kMaxControlPayload) std::abort();
    if (code != fa::ws::kCloseNoStatus && !fa::ws::valid_close_code(code)) std::abort();
    closed = true;
  }
};

void run(std::string input, std::size_t split, std::size_t max, bool pause, bool deflate) {
  Listener l;
  l.max = max;
  l.pause = pause;
  fa::ws::FrameParser p(&l, max);
  if (deflate) p.set_inflater(std::make_unique<fa::ws::Inflater>(15, false, max));
  const std::size_t bounds[2] = {split, input.size()};
  std::size_t pos = 0;
  for (std::size_t end : bounds) {
    while (pos < end) {
      const std::size_t n = end - pos;
      const fa::ws::FrameResult r = p.execute(input.data() + pos, n);
      if (r.consumed > n) std::abort();
      if (r.kind == fa::ws::FrameResult::kError || r.kind == fa::ws::FrameResult::kClosed) return;
      pos += r.consumed;
      if (r.kind == fa::ws::FrameResult::kOk) break;
    }
    pos = end;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max = 16 + bytes[0] * 64;  // small limits reach the 1009 path
  std::string input(reinterpret_cast<const char*>(bytes + 2), size - 2);
  const std::size_t split = input.empty() ? 0 : bytes[1] % (input.size() + 1);
  run(input, split, max, false, false);
  run(input, split, max, true, false);
  run(input, split, max, false, true);
  run(input, split, max, true, true);
  return 0;
}
