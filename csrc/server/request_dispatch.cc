#include "server/request_dispatch.h"

namespace fa {

void refuse_over_limit(Server& server, HttpStream& stream) {
  stream.answer_error(503, "Service Unavailable");
  server.handler()->on_over_limit(stream);
  server.handler()->on_native_response(stream, 503);
}

}  // namespace fa
