// An example native handler library for fasterapi-asgi. Build it with
//   python -c "from fasterapi_asgi import native; native.build('examples/native/score.cpp', 'build/libscore.so')"
// or with the CMake snippet in CMakeLists.txt next to this file.
//
// Handlers run on the server's event-loop thread without the GIL: they must not block.
#include <fasterapi_asgi/native.h>

#include <cstdio>
#include <stdexcept>
#include <string>

using fasterapi_asgi::param;
using fasterapi_asgi::view;

extern "C" uint32_t fa_native_abi_version(void) { return FA_NATIVE_ABI_VERSION; }

// GET /score/{user_id:int} -> {"user_id": N, "score": S}; user 13 makes the handler throw (-> 500).
extern "C" int score(const fa_request* req, fa_response* res, const fa_response_api* api, void*) {
  const std::string id(param(req, "user_id"));
  if (id == "13") throw std::runtime_error("unlucky user");
  unsigned long long s = 7;
  for (char c : id) s = s * 31 + static_cast<unsigned>(c - '0');
  char body[96];
  const int n = std::snprintf(body, sizeof body, "{\"user_id\":%s,\"score\":%llu}", id.c_str(), s % 1000);
  api->add_header(res, "content-type", 12, "application/json", 16);
  api->write(res, body, static_cast<size_t>(n));
  return 0;
}

// POST /reverse -> the request body reversed, with the request's content-type.
extern "C" int reverse(const fa_request* req, fa_response* res, const fa_response_api* api, void*) {
  std::string body(view(req->body));
  std::string reversed(body.rbegin(), body.rend());
  const auto ctype = fasterapi_asgi::header(req, "content-type");
  if (!ctype.empty()) api->add_header(res, "content-type", 12, ctype.data(), ctype.size());
  api->set_status(res, 201);
  api->write(res, reversed.data(), reversed.size());
  return 0;
}

// Any route: a non-zero return also means 500.
extern "C" int fail(const fa_request*, fa_response*, const fa_response_api*, void*) { return -1; }
