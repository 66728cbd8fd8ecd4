// The libuv API, resolved at run time from the libuv that drives the running loop.
//
// uvloop links libuv statically and exports its uv_* symbols from its extension module. Two different libuv copies
// must never operate on one uv_loop_t, so every libuv call in fasterapi-asgi goes through this table, which is filled
// from uvloop's module (dlopen RTLD_NOLOAD + dlsym). The table lists exactly the functions the core calls (and the
// three size queries of the start-up check): each one must be exported by uvloop's module, so an unused entry would
// be a start-up requirement for nothing.
//
// The core is compiled against one libuv release's headers (uvloop's sdist) but runs on whichever uvloop is
// installed, so what the compiled code bakes in (type sizes, the offsets of the fields it touches, enum values,
// prototypes) must be the same in the runtime libuv, and so must the behaviour the core relies on. uv_api_bind()
// accepts a runtime libuv only when
//   - its version is one of FA_UV_PROVEN_LIBUV: releases whose headers tests/uv_abi/layout_probe.cc showed to give
//     the core exactly the layout of the headers it is built with, and on which the server was seen to serve in
//     both loop modes (tests/python/test_uvloop_versions.py; the table is in docs/architecture.md), and
//   - its own uv_loop_size(), uv_handle_size() and uv_req_size() equal the compiled sizeof of every libuv type the
//     core allocates (a libuv built with other options would fail here even at a proven version).
#pragma once

#include <uv.h>

#include <string>

#define FA_UV_FUNCTIONS(X) \
  X(uv_version)            \
  X(uv_strerror)           \
  X(uv_loop_init)          \
  X(uv_loop_close)         \
  X(uv_run)                \
  X(uv_backend_fd)         \
  X(uv_backend_timeout)    \
  X(uv_now)                \
  X(uv_close)              \
  X(uv_tcp_init)           \
  X(uv_tcp_open)           \
  X(uv_tcp_nodelay)        \
  X(uv_tcp_getpeername)    \
  X(uv_tcp_getsockname)    \
  X(uv_pipe_init)          \
  X(uv_pipe_open)          \
  X(uv_listen)             \
  X(uv_accept)             \
  X(uv_read_start)         \
  X(uv_read_stop)          \
  X(uv_try_write)          \
  X(uv_write)              \
  X(uv_timer_init)         \
  X(uv_timer_start)        \
  X(uv_timer_stop)         \
  X(uv_prepare_init)       \
  X(uv_prepare_start)      \
  X(uv_prepare_stop)       \
  X(uv_ip4_name)           \
  X(uv_ip6_name)           \
  X(uv_buf_init)           \
  X(uv_fileno)             \
  X(uv_poll_init)          \
  X(uv_poll_start)         \
  X(uv_poll_stop)          \
  X(uv_loop_size)          \
  X(uv_handle_size)        \
  X(uv_req_size)

// The libuv releases the core is proven against (major, minor, patch, the uvloop releases that vendor it), oldest
// first. Adding one: its uvloop release's probe output must equal the build headers' (test_uvloop_versions.py),
// its uvloop release then joins FA_UVLOOP_REQUIREMENT and pyproject.toml, and docs/architecture.md's table.
#define FA_UV_PROVEN_LIBUV(X)           \
  X(1, 46, 0, "0.18.0, 0.19.0")         \
  X(1, 48, 0, "0.20.0, 0.21.0, 0.22.1") \
  X(1, 52, 1, "0.23.0")

// The uvloop releases those are: the runtime dependency in pyproject.toml, named by every start-up error. The upper
// bound is the newest proven release itself: a later patch release may vendor another libuv, which start-up would
// refuse, so pip must not install one before it is proven.
#define FA_UVLOOP_REQUIREMENT "uvloop>=0.18,<=0.23.0"

namespace fa {

struct UvApi {
#define FA_UV_MEMBER(name) decltype(&::name) name = nullptr;
  FA_UV_FUNCTIONS(FA_UV_MEMBER)
#undef FA_UV_MEMBER
};

// The process-wide table. Valid once uv_api_bind() returned true; never changes afterwards.
extern UvApi uv;

// UV_VERSION_HEX of each FA_UV_PROVEN_LIBUV release, oldest first; and whether `version_hex` is one of them.
constexpr unsigned kProvenLibuv[] = {
#define FA_UV_PROVEN_HEX(major, minor, patch, uvloop) ((major) << 16) | ((minor) << 8) | (patch),
    FA_UV_PROVEN_LIBUV(FA_UV_PROVEN_HEX)
#undef FA_UV_PROVEN_HEX
};

constexpr bool uv_version_proven(unsigned version_hex) {
  for (unsigned v : kProvenLibuv)
    if (v == version_hex) return true;
  return false;
}

// Fill `uv` from the shared object at `path`, which must already be loaded (uvloop's loop module). Idempotent.
// On failure returns false and sets *error to a one-line, user-facing reason.
bool uv_api_bind(const char* path, std::string* error);

// Fill `uv` from a dlopen handle (the C++ tests pass their own binary). Same contract as uv_api_bind(). Nothing is
// stored unless every check passes, so a refused libuv leaves `uv` empty and uv_api_bound() false.
bool uv_api_bind_handle(void* dl_handle, const char* what, std::string* error);

bool uv_api_bound();

}  // namespace fa
