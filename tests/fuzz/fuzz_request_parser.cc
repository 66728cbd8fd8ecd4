// libFuzzer target: the request parser (llhttp + the server's limits and rules), fed as the connection feeds it:
// whole, split at a point chosen by the input, and with the listener pausing at every callback (each pause
// resumed and the rest fed again, as Http1Session::resume does). Invariants: execute() never consumes more than it
// was given; every span of a delivered head lies inside its arena; the three modes agree on the outcome.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http/parser.h"

namespace {

struct Listener final : fa::ParserListener {
  fa::RequestParser* parser = nullptr;
  bool pause_everywhere = false;
  std::string log;
  void on_request_begin() override { log += 'B'; }
  int on_request_head(fa::RequestHead& head) override {
    const std::size_t arena = head.arena.size();
    if (head.url.off + head.url.len > arena) std::abort();
    for (const auto& h : head.headers) {
      if (h.first.off + h.first.len > arena || h.second.off + h.second.len > arena) std::abort();
    }
    (void)head.path_view(), (void)head.query_view(), (void)head.target_view();
    log += 'H';
    return pause_everywhere ? kPause : kContinue;
  }
  std::size_t body = 0;  // body bytes of the current request (how they were split is not part of the outcome)
  int on_request_body(const char*, std::size_t len) override {
    body += len;
    return pause_everywhere ? kPause : kContinue;
  }
  int on_request_complete() override {
    log += 'C';
    log += std::to_string(body);
    body = 0;
    return pause_everywhere ? kPause : kContinue;
  }
};

// Feeds [data, data + len) in pieces ending at `split`; returns the result log ("...|ok", "|error 400", ...).
std::string run(const char* data, std::size_t len, std::size_t split, bool pause_everywhere, bool require_host) {
  fa::ParserLimits limits;
  limits.require_host = require_host;
  limits.max_header_bytes = 4096;
  limits.max_url_bytes = 1024;
  limits.max_headers = 32;
  Listener l;
  l.pause_everywhere = pause_everywhere;
  fa::RequestParser p(&l, &limits);
  l.parser = &p;
  const std::size_t bounds[2] = {split, len};
  std::size_t pos = 0;
  for (std::size_t end : bounds) {
    while (true) {
      const std::size_t n = end - pos;
      const fa::ParseResult r = p.execute(data + pos, n);
      if (r.consumed > n) std::abort();
      if (r.kind == fa::ParseResult::kError) return l.log + "|error " + std::to_string(r.status);
      if (r.kind == fa::ParseResult::kUpgrade) return l.log + "|upgrade";
      pos += r.consumed;
      if (r.kind != fa::ParseResult::kPaused) break;
      p.resume();
      if (pos == end) {
        // As Http1Session::resume: run the parser on nothing, it may owe a callback.
        const fa::ParseResult again = p.execute(data + pos, 0);
        if (again.kind == fa::ParseResult::kError) return l.log + "|error " + std::to_string(again.status);
        if (again.kind == fa::ParseResult::kPaused) p.resume();
        break;
      }
    }
    pos = end;
  }
  return l.log + (p.finish().kind == fa::ParseResult::kError ? "|incomplete" : "|ok");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size < 2) return 0;
  const bool require_host = (bytes[0] & 1) != 0;
  const std::size_t split_seed = bytes[1];
  const char* data = reinterpret_cast<const char*>(bytes + 2);
  const std::size_t len = size - 2;
  const std::size_t split = len == 0 ? 0 : split_seed % (len + 1);
  const std::string whole = run(data, len, len, false, require_host);
  const std::string split_run = run(data, len, split, false, require_host);
  if (whole != split_run) std::abort();  // where a read ends must not change what is parsed
  (void)run(data, len, split, true, require_host);
  return 0;
}
