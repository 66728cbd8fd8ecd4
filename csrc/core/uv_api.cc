#include "core/uv_api.h"

#include <dlfcn.h>

namespace fa {

UvApi uv;

namespace {
bool g_bound = false;

std::string version_text(unsigned v) {
  return std::to_string((v >> 16) & 0xff) + "." + std::to_string((v >> 8) & 0xff) + "." + std::to_string(v & 0xff);
}
}  // namespace

bool uv_api_bound() { return g_bound; }

bool uv_api_bind_handle(void* handle, const char* what, std::string* error) {
  if (g_bound) return true;
  UvApi table;
#define FA_UV_RESOLVE(name)                                                                        \
  table.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name));                          \
  if (table.name == nullptr) {                                                                     \
    *error = std::string("libuv symbol ") + #name + " is not exported by " + what +                \
             " (this uvloop build does not expose its libuv; install uvloop>=0.23,<0.24)";         \
    return false;                                                                                  \
  }
  FA_UV_FUNCTIONS(FA_UV_RESOLVE)
#undef FA_UV_RESOLVE
  const unsigned runtime = table.uv_version();
  const unsigned headers = UV_VERSION_HEX;
  if ((runtime >> 8) != (headers >> 8)) {
    *error = std::string("libuv version mismatch: the running uvloop uses libuv ") + version_text(runtime) +
             " but fasterapi-asgi was built against libuv " + version_text(headers) +
             " headers; install the uvloop release this build pins (uvloop>=0.23,<0.24) or rebuild fasterapi-asgi";
    return false;
  }
  uv = table;
  g_bound = true;
  return true;
}

bool uv_api_bind(const char* path, std::string* error) {
  if (g_bound) return true;
  void* handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
  if (handle == nullptr) {
    *error = std::string("cannot reach uvloop's libuv in ") + path + ": module is not loaded (" + dlerror() + ")";
    return false;
  }
  const bool ok = uv_api_bind_handle(handle, path, error);
  // The module stays loaded by Python; dropping our extra reference keeps its refcount balanced.
  dlclose(handle);
  return ok;
}

}  // namespace fa
