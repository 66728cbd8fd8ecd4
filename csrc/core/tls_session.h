// TLS over memory BIOs: the transport-independent part of serving HTTPS. A connection feeds the ciphertext it reads
// and gets plaintext back; it hands plaintext to encrypt and sends the ciphertext that comes out. No libuv, no
// Python; OpenSSL through the `ossl` table (tls_api.h), which must be bound first.
#pragma once

#include <cstddef>
#include <string>

#include "core/tls_api.h"

namespace fa {

// One SSL_CTX shared by a server's connections. Holds its own reference (SSL_CTX_up_ref), so the Python
// ssl.SSLContext it came from may be collected while connections still use it.
class TlsContext {
 public:
  // Take a reference to `ctx` and install the ALPN selection (http/1.1; h2 first when `http2`). Returns nullptr
  // with *error set when the OpenSSL table is not bound.
  static TlsContext* adopt(SSL_CTX* ctx, std::string* error, bool http2 = false);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// The TLS state of one connection (server side). Owned by the connection; the context must outlive it.
class TlsSession {
 public:
  enum ReadResult : int { kWantMore = 0, kClosed = -1, kFailed = -2 };

  explicit TlsSession(const TlsContext& ctx);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  bool ok() const { return ssl_ != nullptr; }

  // Ciphertext from the peer (copied into the read BIO).
  void feed(const char* data, std::size_t len);
  // Plaintext into `buf`: > 0 bytes read; kWantMore when all fed ciphertext is consumed (the handshake may have
  // produced output: see pending_output()); kClosed on the peer's close_notify; kFailed on a handshake or record
  // error (failure() says why, in OpenSSL's words; an alert for the peer may be pending).
  int read(char* buf, std::size_t cap);
  // Encrypt `len` plaintext bytes into the write BIO (a memory BIO takes any length). False on failure.
  bool write(const char* data, std::size_t len);
  // Queue close_notify (once, after the handshake).
  void shutdown();
  // Ciphertext waiting to be sent, and taking it: up to `cap` bytes into `dst`, returns how many.
  std::size_t pending_output() const;
  std::size_t take_output(char* dst, std::size_t cap);

  bool handshake_done() const { return handshake_done_; }
  // The protocol ALPN selected ("" if none).
  std::string alpn() const;
  const std::string& failure() const { return failure_; }

 private:
  void note_failure(const char* fallback);
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // owned by ssl_ (SSL_set_bio)
  BIO* out_ = nullptr;  // owned by ssl_
  bool handshake_done_ = false;
  bool shutdown_sent_ = false;
  std::string failure_;
};

}  // namespace fa
