#include "core/tls_api.h"

#include <dlfcn.h>

namespace fa {

TlsApi ossl;

namespace {
bool g_bound = false;
// OpenSSL 1.1.1: the oldest release Python 3.10 builds against, and the one whose ABI the table's signatures match.
constexpr unsigned long kMinimumOpenSSL = 0x10101000UL;
}  // namespace

bool tls_api_bound() { return g_bound; }

bool tls_api_bind_handle(void* handle, const char* what, std::string* error) {
  if (g_bound) return true;
  TlsApi table;
#define FA_TLS_RESOLVE(name)                                                                             \
  table.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name));                                \
  if (table.name == nullptr) {                                                                           \
    *error = std::string("OpenSSL function ") + #name + " is not reachable from " + what +                \
             " (fasterapi-asgi serves TLS with the OpenSSL that Python's ssl module loaded; this Python's " \
             "ssl module does not export it)";                                                           \
    return false;                                                                                        \
  }
  FA_TLS_FUNCTIONS(FA_TLS_RESOLVE)
#undef FA_TLS_RESOLVE
  const unsigned long version = table.OpenSSL_version_num();
  if (version < kMinimumOpenSSL) {
    *error = "Python's ssl module uses an OpenSSL older than 1.1.1; fasterapi-asgi's TLS needs 1.1.1 or newer";
    return false;
  }
  ossl = table;
  g_bound = true;
  return true;
}

bool tls_api_bind(const char* path, std::string* error) {
  if (g_bound) return true;
  void* handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
  if (handle == nullptr) {
    *error = std::string("cannot reach Python's OpenSSL through ") + path + ": module is not loaded (" +
             dlerror() + ")";
    return false;
  }
  const bool ok = tls_api_bind_handle(handle, path, error);
  dlclose(handle);  // the module stays loaded by Python
  return ok;
}

}  // namespace fa
