// nghttp2 as the build compiles it in (CMakeLists.txt, fa_nghttp2): the pinned release, the API generation the core
// is written against (nghttp2_ssize, 1.60+), the attack limits it must offer (1.61+), and one request/response
// exchange between an in-memory client session and a server session, frames passed as bytes both ways — the shape
// in which the core will drive it (mem_recv2 from the socket's bytes, mem_send2 into the connection's output).
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "catch_compat.h"

namespace {

struct Peer {
  nghttp2_session* session = nullptr;
  std::map<std::string, std::string> headers;  // of the last HEADERS frame received
  std::string body;
  bool stream_closed = false;
  std::uint32_t close_error = 0xffffffff;
  int32_t request_stream = 0;
};

int on_header(nghttp2_session*, const nghttp2_frame*, const uint8_t* name, size_t namelen, const uint8_t* value,
              size_t valuelen, uint8_t, void* user) {
  static_cast<Peer*>(user)->headers[std::string(reinterpret_cast<const char*>(name), namelen)] =
      std::string(reinterpret_cast<const char*>(value), valuelen);
  return 0;
}

int on_data(nghttp2_session*, uint8_t, int32_t, const uint8_t* data, size_t len, void* user) {
  static_cast<Peer*>(user)->body.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    static_cast<Peer*>(user)->request_stream = frame->hd.stream_id;
  return 0;
}

int on_stream_close(nghttp2_session*, int32_t, uint32_t error_code, void* user) {
  auto* peer = static_cast<Peer*>(user);
  peer->stream_closed = true;
  peer->close_error = error_code;
  return 0;
}

struct Body {
  std::string data;
  size_t offset = 0;
};

nghttp2_ssize read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                        nghttp2_data_source* source, void*) {
  auto* body = static_cast<Body*>(source->ptr);
  const size_t n = std::min(length, body->data.size() - body->offset);
  std::memcpy(buf, body->data.data() + body->offset, n);
  body->offset += n;
  if (body->offset == body->data.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<nghttp2_ssize>(n);
}

nghttp2_session_callbacks* callbacks() {
  nghttp2_session_callbacks* cbs = nullptr;
  REQUIRE(nghttp2_session_callbacks_new(&cbs) == 0);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  return cbs;
}

// Everything `from` has to send, fed to `to`. Returns the number of bytes moved.
size_t pump(Peer& from, Peer& to) {
  size_t moved = 0;
  for (;;) {
    const uint8_t* data = nullptr;
    const nghttp2_ssize n = nghttp2_session_mem_send2(from.session, &data);
    REQUIRE(n >= 0);
    if (n == 0) return moved;
    REQUIRE(nghttp2_session_mem_recv2(to.session, data, static_cast<size_t>(n)) == n);
    moved += static_cast<size_t>(n);
  }
}

nghttp2_nv nv(const char* name, const char* value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)), reinterpret_cast<uint8_t*>(const_cast<char*>(value)),
          std::strlen(name), std::strlen(value), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

TEST_CASE("nghttp2: the pinned release, with the API and limits the core relies on") {
  const nghttp2_info* info = nghttp2_version(0);
  REQUIRE(info != nullptr);
  CHECK(std::string(info->version_str) == NGHTTP2_VERSION);  // the header and the compiled code agree
  // 1.61.0: nghttp2_option_set_max_continuations (CVE-2024-28182); 1.60.0: the nghttp2_ssize API used here;
  // 1.57.0: the stream reset rate limit (CVE-2023-44487, rapid reset).
  CHECK(info->version_num >= 0x013d00);
  CHECK(nghttp2_version(0x013d00) != nullptr);
  nghttp2_option* opt = nullptr;
  REQUIRE(nghttp2_option_new(&opt) == 0);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_del(opt);
}

TEST_CASE("nghttp2: a request and its response between in-memory client and server sessions") {
  Peer client, server;
  nghttp2_session_callbacks* cbs = callbacks();
  REQUIRE(nghttp2_session_client_new(&client.session, cbs, &client) == 0);
  REQUIRE(nghttp2_session_server_new(&server.session, cbs, &server) == 0);
  nghttp2_session_callbacks_del(cbs);

  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  REQUIRE(nghttp2_submit_settings(server.session, NGHTTP2_FLAG_NONE, settings, 1) == 0);
  REQUIRE(nghttp2_submit_settings(client.session, NGHTTP2_FLAG_NONE, nullptr, 0) == 0);
  nghttp2_nv request[] = {nv(":method", "GET"), nv(":scheme", "http"), nv(":authority", "example.test"),
                          nv(":path", "/items/1?q=2"), nv("user-agent", "fa-test")};
  const int32_t stream = nghttp2_submit_request2(client.session, nullptr, request, 5, nullptr, nullptr);
  REQUIRE(stream == 1);

  // The client's preface, SETTINGS and HEADERS reach the server, which sees one complete request.
  REQUIRE(pump(client, server) > 24);
  CHECK(server.request_stream == 1);
  CHECK(server.headers[":method"] == "GET");
  CHECK(server.headers[":path"] == "/items/1?q=2");
  CHECK(server.headers[":authority"] == "example.test");
  CHECK(server.headers["user-agent"] == "fa-test");

  // A 40 KB body: more than one DATA frame (16 KiB maximum frame size by default).
  Body body{std::string(40000, 'x'), 0};
  nghttp2_data_provider2 provider{};
  provider.source.ptr = &body;
  provider.read_callback = read_body;
  nghttp2_nv response[] = {nv(":status", "200"), nv("content-type", "text/plain")};
  REQUIRE(nghttp2_submit_response2(server.session, 1, response, 2, &provider) == 0);
  for (int i = 0; i < 8 && (pump(server, client) > 0 || pump(client, server) > 0); ++i) {
  }
  CHECK(client.headers[":status"] == "200");
  CHECK(client.headers["content-type"] == "text/plain");
  CHECK(client.body == body.data);
  CHECK(client.stream_closed);
  CHECK(client.close_error == NGHTTP2_NO_ERROR);
  CHECK(server.stream_closed);

  nghttp2_session_del(client.session);
  nghttp2_session_del(server.session);
}
