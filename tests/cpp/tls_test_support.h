// TLS helpers of the test binaries that link OpenSSL themselves (the product resolves it from Python's `_ssl` at run
// time): the core's OpenSSL table bound from the binary's own global scope, so client and server share one
// OpenSSL as in the product, and a server context with a throwaway certificate.
#pragma once

#include <openssl/ssl.h>

#include <string>

namespace fa_test {

// Bind fa::ossl to the OpenSSL linked into (and exported by) this binary. Returns "" or the error.
std::string bind_openssl();

// A server SSL_CTX with a self-signed P-256 certificate for "localhost" (valid for an hour), or nullptr.
SSL_CTX* make_self_signed_server_ctx();

}  // namespace fa_test
