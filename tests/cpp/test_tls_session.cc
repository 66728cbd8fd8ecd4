// core/tls_session.*: the server side of TLS over memory BIOs, against an OpenSSL client in the same process.
// The test binary links OpenSSL itself (the product resolves it from Python's `_ssl` at run time); the table is
// bound from the test binary's own global scope, so client and server share one OpenSSL, as in the product.
#include <openssl/ssl.h>

#include <string>

#include "catch_compat.h"
#include "core/tls_session.h"
#include "tls_test_support.h"

namespace {

SSL_CTX* make_server_ctx() {
  SSL_CTX* ctx = fa_test::make_self_signed_server_ctx();
  REQUIRE(ctx != nullptr);
  return ctx;
}

void bind_openssl() { REQUIRE(fa_test::bind_openssl().empty()); }

// An OpenSSL client over memory BIOs, and the pump that moves bytes between it and the server session.
struct Client {
  SSL_CTX* ctx;
  SSL* ssl;
  BIO* in;
  BIO* out;
  explicit Client(const char* alpn_wire = nullptr, unsigned alpn_len = 0) {
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    if (alpn_wire != nullptr) SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn_wire), alpn_len);
    ssl = SSL_new(ctx);
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
  }
  ~Client() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
  // Client output -> server; server plaintext appended to `server_got`; server output -> client.
  void pump(fa::TlsSession& server, std::string* server_got, int* server_status = nullptr) {
    char buf[16384];
    for (int round = 0; round < 64; ++round) {
      bool moved = false;
      int n;
      while ((n = BIO_read(out, buf, sizeof buf)) > 0) {
        server.feed(buf, static_cast<std::size_t>(n));
        moved = true;
      }
      int r;
      while ((r = server.read(buf, sizeof buf)) > 0) server_got->append(buf, static_cast<std::size_t>(r));
      if (server_status != nullptr) *server_status = r;
      while (server.pending_output() > 0) {
        const std::size_t k = server.take_output(buf, sizeof buf);
        BIO_write(in, buf, static_cast<int>(k));
        moved = true;
      }
      if (!SSL_is_init_finished(ssl)) SSL_do_handshake(ssl);
      if (!moved && BIO_ctrl_pending(out) == 0) return;
    }
  }
  std::string read_all() {
    std::string got;
    char buf[16384];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    return got;
  }
};

}  // namespace

TEST_CASE("tls session: handshake, ALPN, data both ways, close_notify") {
  bind_openssl();
  SSL_CTX* raw = make_server_ctx();
  std::string error;
  fa::TlsContext* ctx = fa::TlsContext::adopt(raw, &error);
  REQUIRE(ctx != nullptr);
  SSL_CTX_free(raw);  // the TlsContext holds its own reference
  {
    fa::TlsSession server(*ctx);
    REQUIRE(server.ok());
    const char alpn[] = "\x02h2\x08http/1.1";
    Client client(alpn, sizeof alpn - 1);
    std::string got;
    SSL_do_handshake(client.ssl);
    client.pump(server, &got);
    REQUIRE(server.handshake_done());
    REQUIRE(SSL_is_init_finished(client.ssl) == 1);
    CHECK(server.alpn() == "http/1.1");

    const std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    REQUIRE(SSL_write(client.ssl, request.data(), static_cast<int>(request.size())) > 0);
    client.pump(server, &got);
    CHECK(got == request);

    // A response larger than many records arrives whole and in order.
    std::string body(1 << 20, '\0');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7);
    REQUIRE(server.write(body.data(), body.size()));
    client.pump(server, &got);
    CHECK(client.read_all() == body);

    // The peer's close_notify ends the stream cleanly.
    SSL_shutdown(client.ssl);
    int status = 0;
    client.pump(server, &got, &status);
    CHECK(status == fa::TlsSession::kClosed);
  }
  delete ctx;
}

TEST_CASE("tls session: plain HTTP on the TLS port fails the handshake with OpenSSL's reason") {
  bind_openssl();
  SSL_CTX* raw = make_server_ctx();
  std::string error;
  fa::TlsContext* ctx = fa::TlsContext::adopt(raw, &error);
  SSL_CTX_free(raw);
  {
    fa::TlsSession server(*ctx);
    const std::string plain = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    server.feed(plain.data(), plain.size());
    char buf[256];
    CHECK(server.read(buf, sizeof buf) == fa::TlsSession::kFailed);
    CHECK(server.failure() == "http request");
    CHECK_FALSE(server.handshake_done());
    server.shutdown();  // before the handshake: nothing to send
  }
  {
    // Garbage that looks like no TLS record at all.
    fa::TlsSession server(*ctx);
    const std::string junk(64, '\x01');
    server.feed(junk.data(), junk.size());
    char buf[256];
    CHECK(server.read(buf, sizeof buf) == fa::TlsSession::kFailed);
    CHECK_FALSE(server.failure().empty());
  }
  {
    // A partial ClientHello: the server waits for more.
    fa::TlsSession server(*ctx);
    const char partial[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    server.feed(partial, sizeof partial - 1);
    char buf[256];
    CHECK(server.read(buf, sizeof buf) == fa::TlsSession::kWantMore);
    CHECK(server.pending_output() == 0);
  }
  delete ctx;
}
