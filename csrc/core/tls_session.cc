#include "core/tls_session.h"

#include <climits>

namespace fa {

namespace {

// ALPN: the protocols this server speaks, in preference order (wire format: length-prefixed). The server's list
// wins (SSL_select_next_proto): a client offering both gets h2 when --http2 is on.
const unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
const unsigned char kAlpnH2Http11[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
                void* arg) {
  const bool h2 = arg != nullptr;
  const unsigned char* ours = h2 ? kAlpnH2Http11 : kAlpnHttp11;
  const unsigned int ours_len = h2 ? sizeof kAlpnH2Http11 : sizeof kAlpnHttp11;
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (ossl.SSL_select_next_proto(&selected, &selected_len, ours, ours_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: go on without ALPN (the client decides)
  }
  *out = selected;
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

TlsContext* TlsContext::adopt(SSL_CTX* ctx, std::string* error, bool http2) {
  if (!tls_api_bound()) {
    *error = "the OpenSSL API is not bound";
    return nullptr;
  }
  if (ctx == nullptr || ossl.SSL_CTX_up_ref(ctx) != 1) {
    *error = "cannot take a reference to the SSL context";
    return nullptr;
  }
  // NOTE: this replaces any ALPN callback Python installed (ssl.SSLContext.set_alpn_protocols): the core decides
  // which protocols it speaks.
  static char h2_marker;
  ossl.SSL_CTX_set_alpn_select_cb(ctx, &select_alpn, http2 ? &h2_marker : nullptr);
  return new TlsContext(ctx);
}

TlsContext::~TlsContext() { ossl.SSL_CTX_free(ctx_); }

TlsSession::TlsSession(const TlsContext& ctx) {
  ssl_ = ossl.SSL_new(ctx.get());
  if (ssl_ == nullptr) return;
  in_ = ossl.BIO_new(ossl.BIO_s_mem());
  out_ = ossl.BIO_new(ossl.BIO_s_mem());
  if (in_ == nullptr || out_ == nullptr) {
    ossl.SSL_free(ssl_);  // frees nothing of the BIOs: not set yet
    ssl_ = nullptr;
    return;
  }
  ossl.SSL_set_bio(ssl_, in_, out_);  // ssl_ owns both BIOs from here
  // Release the 16 KB+ record buffers while a connection is idle (keep-alive connections are mostly idle);
  // accept a write buffer that moves between a retried SSL_write and the next (out_ is a std::string).
  ossl.SSL_ctrl(ssl_, SSL_CTRL_MODE, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, nullptr);
  ossl.SSL_set_accept_state(ssl_);
}

TlsSession::~TlsSession() {
  if (ssl_ != nullptr) ossl.SSL_free(ssl_);
}

void TlsSession::feed(const char* data, std::size_t len) {
  while (len > 0) {
    const int chunk = len > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(len);
    const int n = ossl.BIO_write(in_, data, chunk);
    if (n <= 0) return;  // a memory BIO fails only without memory; the next read then reports the error
    data += n;
    len -= static_cast<std::size_t>(n);
  }
}

void TlsSession::note_failure(const char* fallback) {
  const unsigned long e = ossl.ERR_get_error();
  const char* reason = e != 0 ? ossl.ERR_reason_error_string(e) : nullptr;
  failure_ = reason != nullptr ? reason : fallback;
  ossl.ERR_clear_error();  // the queue is per thread: leave nothing for Python's ssl module to trip over
}

int TlsSession::read(char* buf, std::size_t cap) {
  const int want = cap > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(cap);
  // SSL_get_error() reads this thread's error queue: an error another OpenSSL user on the loop thread left there
  // (Python's ssl or hashlib, a database driver) would turn WANT_READ into a fatal error. Cleared before every
  // call, as nginx does.
  ossl.ERR_clear_error();
  const int n = ossl.SSL_read(ssl_, buf, want);
  if (!handshake_done_ && ossl.SSL_is_init_finished(ssl_) == 1) handshake_done_ = true;
  if (n > 0) return n;
  switch (ossl.SSL_get_error(ssl_, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:  // a memory write BIO never refuses; kept for completeness
      return kWantMore;
    case SSL_ERROR_ZERO_RETURN:
      return kClosed;
    case SSL_ERROR_SYSCALL:
      note_failure("unexpected end of the TLS stream");
      return kFailed;
    default:
      note_failure(handshake_done_ ? "TLS record error" : "TLS handshake failed");
      return kFailed;
  }
}

bool TlsSession::write(const char* data, std::size_t len) {
  while (len > 0) {
    const int chunk = len > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(len);
    ossl.ERR_clear_error();  // as before SSL_read(): only this call's errors may decide
    const int n = ossl.SSL_write(ssl_, data, chunk);
    if (n <= 0) {
      note_failure("TLS write failed");
      return false;
    }
    data += n;
    len -= static_cast<std::size_t>(n);
  }
  return true;
}

void TlsSession::shutdown() {
  if (shutdown_sent_ || !handshake_done_) return;
  shutdown_sent_ = true;
  ossl.ERR_clear_error();
  ossl.SSL_shutdown(ssl_);  // queues close_notify; the peer's reply is not waited for
  ossl.ERR_clear_error();
}

std::size_t TlsSession::pending_output() const { return ossl.BIO_ctrl_pending(out_); }

std::size_t TlsSession::take_output(char* dst, std::size_t cap) {
  const int want = cap > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(cap);
  const int n = ossl.BIO_read(out_, dst, want);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

std::string TlsSession::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  ossl.SSL_get0_alpn_selected(ssl_, &data, &len);
  return data != nullptr ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

}  // namespace fa
