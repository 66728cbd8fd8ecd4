// The libuv layout fasterapi-asgi's core depends on, as seen through one release's headers.
//
// The core is compiled against one libuv release's headers but runs on the libuv inside whichever uvloop is
// installed. This probe prints, one "name value" line each, everything of libuv's that the compiled core bakes in:
// the size and alignment of every libuv type the core allocates (inside its own objects or on the heap), the offset
// and size of every field it reads or writes directly (handle->data, req->data, stream->write_queue_size,
// loop->time, uv_buf_t's base/len), and the value of every libuv constant it passes to libuv or compares with.
// Compiled (as C++, like the core) against two releases' headers, equal output means the compiled core is correct
// for both. tests/python/test_uvloop_versions.py does this for every uvloop release in the supported range;
// docs/architecture.md has the table.
//
// Keep this in step with the core: a libuv type, field or constant newly used in csrc/ belongs here too.
#include <uv.h>

#include <cstddef>
#include <cstdio>

#define SIZE(T) std::printf("sizeof(%s) %zu\nalignof(%s) %zu\n", #T, sizeof(T), #T, alignof(T))
#define FIELD(T, f)                                                                                    \
  std::printf("offsetof(%s.%s) %zu\nsizeof(%s.%s) %zu\n", #T, #f, std::size_t{offsetof(T, f)}, #T, #f, \
              sizeof(T::f))
#define VALUE(c) std::printf("%s %ld\n", #c, static_cast<long>(c))

// The fields every handle type shares (UV_HANDLE_FIELDS): the core reads h->data through uv_handle_t* as well as
// through the concrete type, and the Connection/Listener unions rely on the common initial fields.
#define HANDLE(T) \
  SIZE(T);        \
  FIELD(T, data); \
  FIELD(T, loop); \
  FIELD(T, type)

int main() {
  std::printf("version %d.%d.%d\n", UV_VERSION_MAJOR, UV_VERSION_MINOR, UV_VERSION_PATCH);

  // Allocated by the core: the private loop of --loop asyncio (malloc(sizeof(uv_loop_t))). loop->time is read
  // directly on the request path (what uv_now() returns): a private field, so its offset matters.
  SIZE(uv_loop_t);
  FIELD(uv_loop_t, data);
  FIELD(uv_loop_t, time);

  // Handles embedded in the core's Connection, Listener and Server objects.
  HANDLE(uv_handle_t);
  HANDLE(uv_stream_t);
  FIELD(uv_stream_t, write_queue_size);
  HANDLE(uv_tcp_t);
  FIELD(uv_tcp_t, write_queue_size);
  HANDLE(uv_pipe_t);
  FIELD(uv_pipe_t, write_queue_size);
  HANDLE(uv_timer_t);
  HANDLE(uv_prepare_t);
  HANDLE(uv_poll_t);

  // Requests: the core's write request embeds a uv_write_t and sets req.data.
  SIZE(uv_req_t);
  FIELD(uv_req_t, data);
  FIELD(uv_req_t, type);
  SIZE(uv_write_t);
  FIELD(uv_write_t, data);
  FIELD(uv_write_t, type);

  // Buffers: filled by the core in the alloc callback, passed as arrays to uv_try_write() and uv_write().
  SIZE(uv_buf_t);
  FIELD(uv_buf_t, base);
  FIELD(uv_buf_t, len);
  SIZE(uv_os_fd_t);

  // The handle and request types given to uv_handle_size()/uv_req_size() by the start-up check, and the constants
  // the core passes to libuv or compares its results with.
  VALUE(UV_HANDLE);
  VALUE(UV_STREAM);
  VALUE(UV_TCP);
  VALUE(UV_NAMED_PIPE);
  VALUE(UV_TIMER);
  VALUE(UV_PREPARE);
  VALUE(UV_POLL);
  VALUE(UV_REQ);
  VALUE(UV_WRITE);
  VALUE(UV_RUN_NOWAIT);
  VALUE(UV_READABLE);
  VALUE(UV_WRITABLE);
  VALUE(UV_EAGAIN);
  VALUE(UV_ENOSYS);
  VALUE(UV_ENOMEM);
  return 0;
}
