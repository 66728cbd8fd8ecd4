// The libuv API, resolved at run time from the libuv that drives the running loop.
//
// uvloop links libuv statically and exports its uv_* symbols from its extension module. Two different libuv copies
// must never operate on one uv_loop_t, so every libuv call in fasterapi-asgi goes through this table, which is filled
// from uvloop's module (dlopen RTLD_NOLOAD + dlsym). Headers come from the same libuv release (uvloop's sdist), and
// uv_api_bind() refuses a runtime whose major.minor differs from the headers'. The table lists exactly the functions
// the core calls: each one must be exported by uvloop's module, so an unused entry would be a start-up requirement
// for nothing.
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
  X(uv_poll_stop)

namespace fa {

struct UvApi {
#define FA_UV_MEMBER(name) decltype(&::name) name = nullptr;
  FA_UV_FUNCTIONS(FA_UV_MEMBER)
#undef FA_UV_MEMBER
};

// The process-wide table. Valid once uv_api_bind() returned true; never changes afterwards.
extern UvApi uv;

// Fill `uv` from the shared object at `path`, which must already be loaded (uvloop's loop module). Idempotent.
// On failure returns false and sets *error to a one-line, user-facing reason.
bool uv_api_bind(const char* path, std::string* error);

// Fill `uv` from a dlopen handle (tests may pass a system libuv). Same contract as uv_api_bind().
bool uv_api_bind_handle(void* dl_handle, const char* what, std::string* error);

bool uv_api_bound();

}  // namespace fa
