#include "tls_test_support.h"

#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/tls_api.h"

namespace fa_test {

std::string bind_openssl() {
  std::string error;
  void* self = dlopen(nullptr, RTLD_NOW);
  if (!fa::tls_api_bind_handle(self, "the test binary", &error)) return error.empty() ? "cannot bind OpenSSL" : error;
  return {};
}

SSL_CTX* make_self_signed_server_ctx() {
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  if (pctx == nullptr) return nullptr;
  const bool made = EVP_PKEY_keygen_init(pctx) == 1 &&
                    EVP_PKEY_CTX_set_ec_paramgen_curve_nid(pctx, NID_X9_62_prime256v1) == 1 &&
                    EVP_PKEY_keygen(pctx, &key) == 1;
  EVP_PKEY_CTX_free(pctx);
  if (!made) return nullptr;
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  SSL_CTX* ctx = nullptr;
  if (X509_sign(cert, key, EVP_sha256()) > 0) {
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx != nullptr &&
        (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
      SSL_CTX_free(ctx);
      ctx = nullptr;
    }
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return ctx;
}

}  // namespace fa_test
