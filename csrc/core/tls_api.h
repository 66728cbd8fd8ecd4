// The OpenSSL API, resolved at run time from the OpenSSL that the interpreter's own `ssl` module has loaded.
//
// Why not link libssl: a TLS server must use the OpenSSL that Python's `ssl` module uses. The SSL_CTX the core
// serves with is the one inside the app's `ssl.SSLContext` (built by Config exactly as uvicorn builds it), and an
// SSL_CTX may only be handled by the library instance that made it. Resolving from `_ssl`'s module (dlopen
// RTLD_NOLOAD + dlsym, which searches the module and then its dependencies) gives exactly that instance; the wheel
// then carries no OpenSSL of its own, needs no development headers where it is installed, and follows the system's
// security updates. The headers (Debian's libssl-dev) only give declarations: every function below has the same
// signature from OpenSSL 1.1.1 (Python 3.10's minimum) to 3.x, and tls_api_bind() refuses anything older.
// The table lists exactly the functions the core calls (see uv_api.h for the same pattern with libuv).
#pragma once

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <string>

#define FA_TLS_FUNCTIONS(X)     \
  X(OpenSSL_version_num)        \
  X(SSL_CTX_up_ref)             \
  X(SSL_CTX_free)               \
  X(SSL_CTX_get_options)        \
  X(SSL_CTX_get_verify_mode)    \
  X(SSL_CTX_set_alpn_select_cb) \
  X(SSL_select_next_proto)      \
  X(SSL_new)                    \
  X(SSL_free)                   \
  X(SSL_set_bio)                \
  X(SSL_set_accept_state)       \
  X(SSL_ctrl)                   \
  X(SSL_read)                   \
  X(SSL_write)                  \
  X(SSL_shutdown)               \
  X(SSL_get_error)              \
  X(SSL_is_init_finished)       \
  X(SSL_get0_alpn_selected)     \
  X(BIO_new)                    \
  X(BIO_s_mem)                  \
  X(BIO_read)                   \
  X(BIO_write)                  \
  X(BIO_ctrl_pending)           \
  X(ERR_get_error)              \
  X(ERR_clear_error)            \
  X(ERR_reason_error_string)

namespace fa {

struct TlsApi {
#define FA_TLS_MEMBER(name) decltype(&::name) name = nullptr;
  FA_TLS_FUNCTIONS(FA_TLS_MEMBER)
#undef FA_TLS_MEMBER
};

// The process-wide table. Valid once tls_api_bind() returned true; never changes afterwards.
extern TlsApi ossl;

// Fill `ossl` from the shared object at `path`, which must already be loaded (the `_ssl` extension module, or a
// libssl). Idempotent. On failure returns false and sets *error to a one-line, user-facing reason.
bool tls_api_bind(const char* path, std::string* error);

// Fill `ossl` from a dlopen handle (tests pass the system libssl). Same contract as tls_api_bind().
bool tls_api_bind_handle(void* dl_handle, const char* what, std::string* error);

bool tls_api_bound();

}  // namespace fa
