#include "server/native_abi.h"

#include <llhttp.h>

#include <string>
#include <vector>

#include "server/connection.h"
#include "server/server.h"

// The opaque response type of the C ABI: what a handler set through fa_response_api.
struct fa_response {
  int status = 200;
  std::string headers;  // validated "name: value\r\n" lines
  std::string body;
};

namespace fa {

namespace {

void api_set_status(fa_response* res, int status) { res->status = status; }

int api_add_header(fa_response* res, const char* name, size_t name_len, const char* value, size_t value_len) {
  const std::string_view n(name, name_len), v(value, value_len);
  // The server frames the body itself: a handler's Content-Length would be a second, possibly wrong, one.
  if (header_error(n, v) != nullptr || ascii_iequals(n, "content-length")) return -1;
  res->headers.append(n);
  res->headers.append(": ");
  res->headers.append(v);
  res->headers.append("\r\n");
  return 0;
}

void api_write(fa_response* res, const char* data, size_t len) { res->body.append(data, len); }

const fa_response_api kResponseApi = {FA_NATIVE_ABI_VERSION, &api_set_status, &api_add_header, &api_write};

fa_str to_str(std::string_view v) { return fa_str{v.data(), v.size()}; }

// Reused by every user-handler request on this thread: in steady state nothing is allocated.
struct Scratch {
  std::vector<fa_pair> headers;
  std::vector<fa_pair> params;
  fa_response response;
};
thread_local Scratch t_scratch;

}  // namespace

int run_user_handler(HttpStream& c, const NativeRoute& route, const RouteParams& params, std::string_view body) {
  Scratch& s = t_scratch;
  const RequestHead& head = c.head();
  s.headers.clear();
  for (const auto& h : head.headers) s.headers.push_back(fa_pair{to_str(head.str(h.first)), to_str(head.str(h.second))});
  s.params.clear();
  for (int i = 0; i < params.count; ++i) s.params.push_back(fa_pair{to_str(params.names[i]), to_str(params.values[i])});
  fa_request req{};
  req.abi_version = FA_NATIVE_ABI_VERSION;
  req.method = to_str(llhttp_method_name(static_cast<llhttp_method_t>(head.method)));
  req.path = to_str(head.path_view());
  req.query = to_str(head.query_view());
  req.headers = s.headers.data();
  req.header_count = s.headers.size();
  req.params = s.params.data();
  req.param_count = s.params.size();
  req.body = to_str(body);
  fa_response& res = s.response;
  res.status = 200;
  res.headers.clear();
  res.body.clear();
  int rc = -1;
  try {
    rc = route.fn(&req, &res, &kResponseApi, route.user_data);
  } catch (...) {
    rc = -1;
  }
  if (rc != 0 || res.status < 100 || res.status > 999) {
    // The request was read whole and the handler wrote nothing yet: the connection stays usable.
    c.write_response(500, "content-type: text/plain; charset=utf-8\r\n", "Internal Server Error", true);
    return 500;
  }
  const bool no_body = res.status < 200 || res.status == 204 || res.status == 304;
  c.write_response(res.status, res.headers, no_body ? std::string_view() : std::string_view(res.body), !no_body);
  return res.status;
}

}  // namespace fa
