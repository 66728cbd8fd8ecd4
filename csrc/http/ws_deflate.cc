#include "http/ws_deflate.h"

#include <zlib.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "http/websocket.h"

namespace fa::ws {

// ---------------------------------------------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------------------------------------------

namespace {

constexpr std::string_view kExtensionName = "permessage-deflate";

// RFC 9110 tchar.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != '\0' && std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

struct Param {
  std::string_view name;
  std::string value;  // unescaped
  bool has_value = false;
};

struct Item {
  std::string_view name;
  std::vector<Param> params;
};

// A recursive-descent parser of one Sec-WebSocket-Extensions value with the grammar and error positions of the
// websockets library (websockets.headers.parse_extension): 1#( token *( OWS ";" OWS token [ OWS "=" OWS
// ( token / quoted-string ) ] ) ), empty list elements skipped.
class ExtensionParser {
 public:
  explicit ExtensionParser(std::string_view s) : s_(s) {}

  // False with error() set on a syntax error.
  bool parse(std::vector<Item>* items) {
    while (peek() == ',') skip_ows(pos_ + 1);
    for (;;) {
      Item item;
      if (!token(&item.name)) return false;
      skip_ows(pos_);
      while (peek() == ';') {
        skip_ows(pos_ + 1);
        Param p;
        if (!token(&p.name)) return false;
        skip_ows(pos_);
        if (peek() == '=') {
          skip_ows(pos_ + 1);
          p.has_value = true;
          if (peek() == '"') {
            const std::size_t before = pos_;
            if (!quoted(&p.value)) return false;
            bool ok = !p.value.empty();
            for (char c : p.value) ok = ok && is_tchar(c);
            if (!ok) return fail("invalid quoted header content", before);
          } else {
            std::string_view v;
            if (!token(&v)) return false;
            p.value.assign(v);
          }
          skip_ows(pos_);
        }
        item.params.push_back(std::move(p));
      }
      items->push_back(std::move(item));
      skip_ows(pos_);
      if (pos_ == s_.size()) return true;
      if (peek() != ',') return fail("expected comma", pos_);
      skip_ows(pos_ + 1);
      while (peek() == ',') skip_ows(pos_ + 1);
      if (pos_ == s_.size()) return true;
    }
  }
  const std::string& error() const { return error_; }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ows(std::size_t from) {
    pos_ = from;
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
  }
  bool token(std::string_view* out) {
    const std::size_t start = pos_;
    while (pos_ < s_.size() && is_tchar(s_[pos_])) ++pos_;
    if (pos_ == start) return fail("expected token", start);
    *out = s_.substr(start, pos_ - start);
    return true;
  }
  // RFC 9110 quoted-string: DQUOTE *( qdtext / quoted-pair ) DQUOTE.
  bool quoted(std::string* out) {
    const std::size_t start = pos_;
    std::size_t i = pos_ + 1;
    while (i < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i]);
      if (c == '"') {
        pos_ = i + 1;
        return true;
      }
      if (c == '\\') {
        if (i + 1 >= s_.size()) break;
        const auto e = static_cast<unsigned char>(s_[i + 1]);
        if (!(e == '\t' || (e >= 0x20 && e != 0x7F))) break;
        out->push_back(static_cast<char>(e));
        i += 2;
        continue;
      }
      if (!(c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E))) break;
      out->push_back(static_cast<char>(c));
      ++i;
    }
    return fail("expected quoted string", start);
  }
  bool fail(const char* what, std::size_t at) {
    error_ = "invalid Sec-WebSocket-Extensions header: ";
    error_ += what;
    error_ += " at ";
    error_ += std::to_string(at);
    error_ += " in ";
    error_.append(s_);
    return false;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::string error_;
};

// "8".."15" exactly, as websockets accepts them; else 0.
int window_bits(const std::string& v) {
  if (v.size() == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
  return 0;
}

// One offer, as websockets' ServerPerMessageDeflateFactory.process_request_params with uvicorn's settings.
// False when it must be declined.
bool accept_offer(const Item& offer, DeflateParams* out, std::string* response) {
  bool server_nct = false, client_nct = false;
  int server_bits = 0, client_bits = 0;  // 0: absent
  bool client_bits_bare = false;         // "client_max_window_bits" without a value: the client supports it
  bool seen_client_bits = false;
  for (const Param& p : offer.params) {
    if (p.name == "server_no_context_takeover" || p.name == "client_no_context_takeover") {
      bool& flag = p.name[0] == 's' ? server_nct : client_nct;
      if (flag || p.has_value) return false;
      flag = true;
    } else if (p.name == "server_max_window_bits") {
      if (server_bits != 0 || !p.has_value || (server_bits = window_bits(p.value)) == 0) return false;
    } else if (p.name == "client_max_window_bits") {
      if (seen_client_bits) return false;
      seen_client_bits = true;
      if (!p.has_value)
        client_bits_bare = true;
      else if ((client_bits = window_bits(p.value)) == 0)
        return false;
    } else {
      return false;
    }
  }
  // server_max_window_bits: ours unless the client asks for less.
  if (server_bits == 0 || server_bits > kServerMaxWindowBits) server_bits = kServerMaxWindowBits;
  if (server_bits == 8) return false;  // zlib cannot compress with a 256-byte window (websockets declines too)
  // client_max_window_bits: only when the client said it supports the parameter.
  if (client_bits_bare || client_bits > kClientMaxWindowBits) client_bits = kClientMaxWindowBits;
  out->server_no_context_takeover = server_nct;
  out->client_no_context_takeover = client_nct;
  out->server_max_window_bits = server_bits;
  out->client_max_window_bits = client_bits != 0 ? client_bits : 15;
  response->assign(kExtensionName);
  if (server_nct) response->append("; server_no_context_takeover");
  if (client_nct) response->append("; client_no_context_takeover");
  response->append("; server_max_window_bits=");
  response->append(std::to_string(server_bits));
  if (client_bits != 0) {
    response->append("; client_max_window_bits=");
    response->append(std::to_string(client_bits));
  }
  return true;
}

}  // namespace

Negotiation negotiate_deflate(const std::string_view* values, std::size_t count, DeflateParams* params,
                              std::string* response) {
  // Every value is parsed (a syntax error anywhere refuses the handshake, as websockets does) before any offer is
  // considered.
  std::vector<Item> items;
  for (std::size_t i = 0; i < count; ++i) {
    ExtensionParser parser(values[i]);
    if (!parser.parse(&items)) {
      *response = parser.error();
      return Negotiation::kInvalidHeader;
    }
  }
  for (const Item& item : items)
    if (item.name == kExtensionName && accept_offer(item, params, response)) return Negotiation::kAccepted;
  return Negotiation::kNone;
}

// ---------------------------------------------------------------------------------------------------------------
// ByteBuffer
// ---------------------------------------------------------------------------------------------------------------

ByteBuffer::~ByteBuffer() {
  std::free(data_);
}

bool ByteBuffer::reserve(std::size_t n, std::size_t cap_limit) {
  if (n <= cap_) return true;
  std::size_t cap = cap_ * 2 > n ? cap_ * 2 : n;
  if (cap < 256) cap = 256;
  if (cap > cap_limit && cap_limit >= n) cap = cap_limit;
  void* p = std::realloc(data_, cap);
  if (p == nullptr) return false;
  data_ = static_cast<char*>(p);
  cap_ = cap;
  return true;
}

void ByteBuffer::trim(std::size_t keep) {
  if (cap_ <= keep) return;
  std::free(data_);
  data_ = nullptr;
  size_ = cap_ = 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Deflater
// ---------------------------------------------------------------------------------------------------------------

namespace {

constexpr unsigned char kTail[4] = {0x00, 0x00, 0xFF, 0xFF};

// zlib counts in uInt: feed it at most this much per call.
constexpr std::size_t kMaxZChunk = 1u << 30;

}  // namespace

Deflater::Deflater(int window_bits, bool no_context_takeover)
    : window_bits_(window_bits), no_context_takeover_(no_context_takeover) {}

Deflater::~Deflater() {
  if (zs_ == nullptr) return;
  deflateEnd(zs_);
  delete zs_;
}

bool Deflater::ready() {
  if (zs_ != nullptr) return true;
  auto* z = new (std::nothrow) z_stream{};
  if (z == nullptr) return false;
  // As Python's zlib.compressobj(wbits=-bits, memLevel=5): level 6 (Z_DEFAULT_COMPRESSION), raw deflate.
  if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits_, kDeflateMemLevel, Z_DEFAULT_STRATEGY) != Z_OK) {
    delete z;
    return false;
  }
  zs_ = z;
  return true;
}

bool Deflater::compress(const char* data, std::size_t len, ByteBuffer& out) {
  out.clear();
  if (!ready()) return false;
  // Room for the usual case in one go: deflateBound() is for Z_FINISH; a sync flush adds at most an empty stored
  // block (5 bytes) and a few bits.
  if (!out.reserve(deflateBound(zs_, static_cast<uLong>(len < kMaxZChunk ? len : kMaxZChunk)) + 16)) {
    deflateReset(zs_);
    return false;
  }
  std::size_t pos = 0;
  if (len == 0) {
    // zlib skips a flush that follows a flush with no input in between: pass "no flush" first, so that an empty
    // message is an empty stored block as for any other (the bytes Python's zlib, so websockets, produce).
    zs_->next_in = nullptr;
    zs_->avail_in = 0;
    zs_->next_out = reinterpret_cast<Bytef*>(out.data());
    zs_->avail_out = static_cast<uInt>(out.capacity());
    deflate(zs_, Z_NO_FLUSH);
  }
  for (;;) {
    const std::size_t in_now = len - pos < kMaxZChunk ? len - pos : kMaxZChunk;
    zs_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data + pos));
    zs_->avail_in = static_cast<uInt>(in_now);
    if (out.size() == out.capacity() && !out.reserve(out.size() + 1)) {
      deflateReset(zs_);
      return false;
    }
    const std::size_t room = out.capacity() - out.size() < kMaxZChunk ? out.capacity() - out.size() : kMaxZChunk;
    zs_->next_out = reinterpret_cast<Bytef*>(out.data() + out.size());
    zs_->avail_out = static_cast<uInt>(room);
    const bool last = pos + in_now == len;
    const int rc = deflate(zs_, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
    out.set_size(out.size() + (room - zs_->avail_out));
    pos += in_now - zs_->avail_in;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      deflateReset(zs_);
      return false;
    }
    // Done when every input byte is in and the flush left room unused (nothing more pending).
    if (last && pos == len && zs_->avail_in == 0 && zs_->avail_out != 0) break;
  }
  // A sync flush ends with an empty stored block, 00 00 FF FF: the receiver puts it back (RFC 7692 7.2.1).
  if (out.size() >= 4 && std::memcmp(out.data() + out.size() - 4, kTail, 4) == 0) out.set_size(out.size() - 4);
  if (no_context_takeover_) deflateReset(zs_);
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Inflater
// ---------------------------------------------------------------------------------------------------------------

Inflater::Inflater(int window_bits, bool no_context_takeover, std::size_t max_size)
    : max_size_(max_size), window_bits_(window_bits < 9 ? 9 : window_bits), no_context_takeover_(no_context_takeover) {}

Inflater::~Inflater() {
  if (zs_ == nullptr) return;
  inflateEnd(zs_);
  delete zs_;
}

int Inflater::inflate_some(const char* data, std::size_t len, const char** reason) {
  if (zs_ == nullptr) {
    auto* z = new (std::nothrow) z_stream{};
    if (z == nullptr || inflateInit2(z, -window_bits_) != Z_OK) {
      delete z;
      *reason = "out of memory";
      return kCloseInternalError;
    }
    zs_ = z;
  }
  // The output may grow to max_size + 1 bytes, never more: reaching max_size + 1 proves the message too big.
  const std::size_t limit = max_size_ + 1;
  std::size_t pos = 0;
  for (;;) {
    if (stream_end_) return 0;  // after a BFINAL block: the rest of this message is not deflate data
    const std::size_t in_now = len - pos < kMaxZChunk ? len - pos : kMaxZChunk;
    zs_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data + pos));
    zs_->avail_in = static_cast<uInt>(in_now);
    if (out_.size() == out_.capacity()) {
      // Start near what the input might inflate to, then grow geometrically, capped at the limit.
      std::size_t want = out_.size() + (in_now < 4096 ? 16384 : in_now * 4);
      if (want > limit || want < out_.size()) want = limit;
      if (!out_.reserve(want, limit)) {
        *reason = "out of memory";
        return kCloseInternalError;
      }
    }
    const std::size_t room = out_.capacity() - out_.size() < kMaxZChunk ? out_.capacity() - out_.size() : kMaxZChunk;
    zs_->next_out = reinterpret_cast<Bytef*>(out_.data() + out_.size());
    zs_->avail_out = static_cast<uInt>(room);
    const int rc = inflate(zs_, Z_SYNC_FLUSH);
    out_.set_size(out_.size() + (room - zs_->avail_out));
    pos += in_now - zs_->avail_in;
    if (out_.size() > max_size_) {
      *reason = "message too big";
      return kCloseTooBig;
    }
    switch (rc) {
      case Z_OK:
        break;
      case Z_STREAM_END:
        stream_end_ = true;
        return 0;
      case Z_BUF_ERROR:  // no progress possible: input used up (with room left) or no room (grown next turn)
        if (zs_->avail_out != 0) return 0;
        break;
      case Z_MEM_ERROR:
        *reason = "out of memory";
        return kCloseInternalError;
      default:  // Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR
        *reason = "decompression failed";
        return kCloseProtocolError;
    }
    // More to do while input is left, or while the output was filled (zlib may hold more of a match to copy).
    if (pos == len && zs_->avail_in == 0 && zs_->avail_out != 0) return 0;
  }
}

int Inflater::feed(const char* data, std::size_t len, const char** reason) {
  if (len == 0) return 0;
  return inflate_some(data, len, reason);
}

int Inflater::finish(const char** reason) {
  return inflate_some(reinterpret_cast<const char*>(kTail), sizeof kTail, reason);
}

void Inflater::end_message() {
  out_.clear();
  out_.trim(256 * 1024);  // a large message's buffer is not kept for the connection's lifetime
  if (zs_ != nullptr && (no_context_takeover_ || stream_end_)) inflateReset(zs_);
  stream_end_ = false;
}

}  // namespace fa::ws
