#include "core/uv_api.h"

#include <dlfcn.h>

#include <cstddef>

namespace fa {

UvApi uv;

// The headers the core is compiled with must be one of the proven releases: the layout probe compares every other
// proven release with them.
static_assert(uv_version_proven(UV_VERSION_HEX),
              "libuv headers not in FA_UV_PROVEN_LIBUV: compare this uvloop release's headers with the layout probe "
              "(tests/python/test_uvloop_versions.py), then add it to FA_UV_PROVEN_LIBUV in core/uv_api.h");

namespace {
bool g_bound = false;

std::string version_text(unsigned v) {
  return std::to_string((v >> 16) & 0xff) + "." + std::to_string((v >> 8) & 0xff) + "." + std::to_string(v & 0xff);
}

// "libuv 1.46.0, 1.48.0, ..., from uvloop 0.18.0, 0.19.0, ...": what every version error names.
std::string proven_text() {
  std::string libuv;
  std::string uvloop;
#define FA_UV_PROVEN_TEXT(major, minor, patch, releases)                          \
  libuv += std::string(libuv.empty() ? "" : ", ") + #major "." #minor "." #patch; \
  uvloop += std::string(uvloop.empty() ? "" : ", ") + releases;
  FA_UV_PROVEN_LIBUV(FA_UV_PROVEN_TEXT)
#undef FA_UV_PROVEN_TEXT
  return "libuv " + libuv + ", from uvloop " + uvloop;
}

// The one remedy every refusal names.
const char* const kRemedy = "; install a supported uvloop: pip install \"" FA_UVLOOP_REQUIREMENT "\"";

// libuv's own size of each type the core allocates, against the compiled sizeof. Empty when all agree.
std::string size_mismatch(const UvApi& t, unsigned runtime) {
  struct Expected {
    const char* type;
    std::size_t runtime;
    std::size_t compiled;
  };
  const Expected sizes[] = {
      {"uv_loop_t", t.uv_loop_size(), sizeof(uv_loop_t)},
      {"uv_handle_t", t.uv_handle_size(UV_HANDLE), sizeof(uv_handle_t)},
      {"uv_stream_t", t.uv_handle_size(UV_STREAM), sizeof(uv_stream_t)},
      {"uv_tcp_t", t.uv_handle_size(UV_TCP), sizeof(uv_tcp_t)},
      {"uv_pipe_t", t.uv_handle_size(UV_NAMED_PIPE), sizeof(uv_pipe_t)},
      {"uv_timer_t", t.uv_handle_size(UV_TIMER), sizeof(uv_timer_t)},
      {"uv_prepare_t", t.uv_handle_size(UV_PREPARE), sizeof(uv_prepare_t)},
      {"uv_poll_t", t.uv_handle_size(UV_POLL), sizeof(uv_poll_t)},
      {"uv_req_t", t.uv_req_size(UV_REQ), sizeof(uv_req_t)},
      {"uv_write_t", t.uv_req_size(UV_WRITE), sizeof(uv_write_t)},
  };
  for (const Expected& e : sizes) {
    if (e.runtime == e.compiled) continue;
    return "libuv layout mismatch: the running uvloop's libuv " + version_text(runtime) + " has sizeof(" + e.type +
           ") = " + std::to_string(e.runtime) + " but fasterapi-asgi was compiled with " + std::to_string(e.compiled) +
           " (libuv " + version_text(UV_VERSION_HEX) + " headers); install uvloop's own wheel: pip install " +
           "--force-reinstall --only-binary uvloop \"" FA_UVLOOP_REQUIREMENT "\"";
  }
  return {};
}
}  // namespace

bool uv_api_bound() { return g_bound; }

bool uv_api_bind_handle(void* handle, const char* what, std::string* error) {
  if (g_bound) return true;
  UvApi table;
#define FA_UV_RESOLVE(name)                                                         \
  table.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name));           \
  if (table.name == nullptr) {                                                      \
    *error = std::string("libuv symbol ") + #name + " is not exported by " + what + \
             " (this uvloop build does not expose its libuv)" + kRemedy;            \
    return false;                                                                   \
  }
  FA_UV_FUNCTIONS(FA_UV_RESOLVE)
#undef FA_UV_RESOLVE
  // Only a proven release: its headers give the core the layout it was compiled with, including a private field
  // (loop->time) that no runtime query can confirm, and its behaviour was tested (libuv 1.43 had the layout but
  // hung --loop asyncio). Every proven release is libuv 1.x and no older than the oldest.
  const unsigned runtime = table.uv_version();
  if (!uv_version_proven(runtime)) {
    const char* how = (runtime >> 16) != 1 ? "is not libuv 1.x"
                      : runtime < kProvenLibuv[0] ? "is older than any this build supports"
                                                  : "is not one this build was checked against";
    *error = std::string("unsupported libuv: the running uvloop uses libuv ") + version_text(runtime) + ", which " +
             how + " (supported: " + proven_text() + ")" + kRemedy;
    return false;
  }
  // Exact, from libuv itself: every type the core allocates has the size the core was compiled with.
  const std::string mismatch = size_mismatch(table, runtime);
  if (!mismatch.empty()) {
    *error = mismatch;
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
