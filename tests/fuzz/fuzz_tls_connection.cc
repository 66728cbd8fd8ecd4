// libFuzzer target: a connection over TLS (fa::Transport decrypting into the sessions, encrypting their output),
// driven by an OpenSSL client in this thread over a loopback socket. The first input byte picks the ALPN the client
// offers (odd: "h2", so the H2Session serves it; even: "http/1.1"); the rest is plaintext, split on 0xFE into
// separate TLS writes with loop turns in between. Then the client sends close_notify and closes. Invariants: no
// sanitizer finding, the server closes every connection and handle it opened, and a fresh HTTPS request after each
// input gets a 200.
#include <openssl/ssl.h>

#include "fuzz_world.h"
#include "tls_test_support.h"

namespace {

fuzz::World* world() {
  static fuzz::World* w = [] {
    if (!fa_test::bind_openssl().empty()) std::abort();
    SSL_CTX* raw = fa_test::make_self_signed_server_ctx();
    std::string error;
    fa::TlsContext* ctx = raw != nullptr ? fa::TlsContext::adopt(raw, &error, /*http2=*/true) : nullptr;
    if (ctx == nullptr) std::abort();
    SSL_CTX_free(raw);  // the TlsContext holds its own reference
    return fuzz::make_world(std::shared_ptr<fa::TlsContext>(ctx));
  }();
  return w;
}

// An OpenSSL client over memory BIOs on a non-blocking loopback socket; the server runs in the same thread, so every
// step moves the client's bytes, then turns the loop.
class TlsClient {
 public:
  TlsClient(fuzz::World* w, bool h2) : w_(w) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    static const unsigned char kH2[] = "\x02h2";
    static const unsigned char kH1[] = "\x08http/1.1";
    if (h2) SSL_CTX_set_alpn_protos(ctx_, kH2, sizeof kH2 - 1);
    else SSL_CTX_set_alpn_protos(ctx_, kH1, sizeof kH1 - 1);
    ssl_ = SSL_new(ctx_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, in_, out_);
    SSL_set_connect_state(ssl_);
    fd_ = fuzz::connect_nonblocking(w);
  }
  ~TlsClient() {
    if (fd_ >= 0) fuzz::close_now(fd_);
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool open() const { return open_; }

  // The handshake, as far as the server lets it go. False when it did not complete.
  bool handshake() {
    for (int i = 0; i < 50 && open_; ++i) {
      if (SSL_do_handshake(ssl_) == 1) return true;
      step();
    }
    return SSL_is_init_finished(ssl_) == 1;
  }
  // Plaintext to the server (dropped once the server closed).
  void write(std::string_view data) {
    if (!data.empty() && open_) SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
    step();
  }
  // The server's plaintext so far (read and kept).
  const std::string& received() const { return received_; }
  // close_notify, then the socket's write side.
  void finish() {
    SSL_shutdown(ssl_);
    step();
    ::shutdown(fd_, SHUT_WR);
    for (int i = 0; i < 50 && open_; ++i) step();
  }
  // Client output to the socket, a loop turn, the socket's bytes into the client, its plaintext out.
  void step() {
    char buf[16384];
    int n;
    while (open_ && (n = BIO_read(out_, buf, sizeof buf)) > 0)
      if (::send(fd_, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) < 0 && errno != EAGAIN) open_ = false;
    fuzz::turn(w_);
    while (true) {
      const ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        BIO_write(in_, buf, static_cast<int>(r));
        continue;
      }
      if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) open_ = false;
      break;
    }
    while ((n = SSL_read(ssl_, buf, sizeof buf)) > 0) received_.append(buf, static_cast<std::size_t>(n));
  }

 private:
  fuzz::World* w_;
  SSL_CTX* ctx_;
  SSL* ssl_;
  BIO* in_;   // owned by ssl_
  BIO* out_;  // owned by ssl_
  int fd_ = -1;
  bool open_ = true;
  std::string received_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size == 0) return 0;
  fuzz::World* w = world();
  {
    TlsClient client(w, (bytes[0] & 1) != 0);
    if (!client.connected()) return 0;  // the machine ran out of something (ports, descriptors)
    if (!client.handshake()) std::abort();  // the server refused a well-formed handshake
    std::string_view rest(reinterpret_cast<const char*>(bytes + 1), size - 1);
    while (client.open() && !rest.empty()) {
      const std::size_t cut = rest.find('\xfe');
      client.write(rest.substr(0, cut));
      rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
    }
    client.finish();
  }
  fuzz::expect_all_closed(w);
  // And the server still answers a plain HTTPS request.
  {
    TlsClient probe(w, false);
    if (!probe.connected()) return 0;
    if (!probe.handshake()) std::abort();
    probe.write("GET /native HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for (int i = 0; i < 100 && probe.received().find("\r\n\r\nok") == std::string::npos && probe.open(); ++i)
      probe.step();
    if (probe.received().rfind("HTTP/1.1 200 OK\r\n", 0) != 0) std::abort();
  }
  fuzz::expect_all_closed(w);
  return 0;
}
