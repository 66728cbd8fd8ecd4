/* fasterapi-asgi native handler ABI, version 1.
 *
 * A native handler is a C (or C++) function in a shared library, called on the server's event-loop thread inside the
 * libuv read callback, without the GIL. It must not block: no sleeping, no blocking I/O, no Python.
 *
 * Everything a handler sees is valid only for the duration of the call. It answers through the response API table it
 * is given, so a handler library does not link against fasterapi-asgi at all.
 *
 * A library exports:
 *   uint32_t fa_native_abi_version(void);      -- must return FA_NATIVE_ABI_VERSION (checked when loaded)
 *   int my_handler(const fa_request*, fa_response*, const fa_response_api*, void* user_data);
 * The handler returns 0 on success; a non-zero return (or a C++ exception escaping it) makes the server answer 500.
 */
#ifndef FASTERAPI_ASGI_NATIVE_H
#define FASTERAPI_ASGI_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FA_NATIVE_ABI_VERSION 1u

typedef struct fa_str {
  const char* data;
  size_t len;
} fa_str;

typedef struct fa_pair {
  fa_str name; /* header names are lowercase */
  fa_str value;
} fa_pair;

typedef struct fa_request {
  uint32_t abi_version;
  fa_str method;       /* "GET", "POST", ... */
  fa_str path;         /* raw (not percent-decoded) path, without the query */
  fa_str query;        /* raw query string without '?', may be empty */
  const fa_pair* headers;
  size_t header_count;
  const fa_pair* params; /* path parameters, in pattern order */
  size_t param_count;
  fa_str body;         /* the whole request body */
} fa_request;

typedef struct fa_response fa_response; /* opaque */

typedef struct fa_response_api {
  uint32_t abi_version;
  /* Status code, default 200. */
  void (*set_status)(fa_response* res, int status);
  /* Adds a header; returns 0, or -1 when the name or value is invalid (CR, LF, NUL...) and was not added. A
   * content-length header is computed by the server and must not be added. */
  int (*add_header)(fa_response* res, const char* name, size_t name_len, const char* value, size_t value_len);
  /* Appends body bytes (copied). */
  void (*write)(fa_response* res, const char* data, size_t len);
} fa_response_api;

typedef int (*fa_native_handler_fn)(const fa_request* req, fa_response* res, const fa_response_api* api,
                                    void* user_data);
typedef uint32_t (*fa_native_abi_version_fn)(void);

#ifdef __cplusplus
} /* extern "C" */

#include <string_view>

namespace fasterapi_asgi {
/* Convenience view over the C structs for C++ handlers. */
inline std::string_view view(fa_str s) { return std::string_view(s.data, s.len); }
inline std::string_view param(const fa_request* req, std::string_view name) {
  for (size_t i = 0; i < req->param_count; ++i)
    if (view(req->params[i].name) == name) return view(req->params[i].value);
  return {};
}
inline std::string_view header(const fa_request* req, std::string_view lower_name) {
  for (size_t i = 0; i < req->header_count; ++i)
    if (view(req->headers[i].name) == lower_name) return view(req->headers[i].value);
  return {};
}
}  // namespace fasterapi_asgi
#endif

#endif /* FASTERAPI_ASGI_NATIVE_H */
