// Native static files through fa::Server + fa::Connection on a real libuv loop (static_route.cc and the
// asynchronous completion of a native request answered by a file): pipelined file responses in order, a file
// larger than the socket buffers, ranges, 304, traversal and symlinks refused, HEAD; then a clean teardown.
// Run under ASan + UBSan too (-DFA_SANITIZE=ON).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "loop_harness.h"

namespace {

using fa_test::HttpResponse;
using fa_test::LoopHarness;

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
}

std::string make_tree(std::string* big) {
  char tmpl[] = "/tmp/fa_static_XXXXXX";
  const char* base = ::mkdtemp(tmpl);
  REQUIRE(base != nullptr);
  const std::string root = std::string(base) + "/www";
  REQUIRE(::mkdir(root.c_str(), 0755) == 0);
  REQUIRE(::mkdir((root + "/sub").c_str(), 0755) == 0);
  write_file(std::string(base) + "/secret.txt", "SECRET");
  write_file(root + "/index.html", "<h1>home</h1>");
  write_file(root + "/sub/a.txt", "hello world");
  write_file(root + "/sub/index.html", "sub");
  big->resize(5u << 20);
  for (std::size_t i = 0; i < big->size(); ++i) (*big)[i] = static_cast<char>('a' + (i * 7919) % 26);
  write_file(root + "/big.bin", *big);
  REQUIRE(::symlink((std::string(base) + "/secret.txt").c_str(), (root + "/link.txt").c_str()) == 0);
  return root;
}

}  // namespace

TEST_CASE("loop: a native directory route, pipelined, with a file larger than the socket buffers", "[loop]") {
  std::string big;
  const std::string root = make_tree(&big);
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  auto files = std::make_shared<fa::StaticFiles>();
  files->root_fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(files->root_fd >= 0);
  files->prefix = "/s";
  files->flags = fa::StaticFiles::kHtml;
  files->headers = {{"cache-control", "max-age=60"}};
  for (const char* pattern : {"/s", "/s/", "/s/{path:path}"}) {
    fa::NativeRoute r;
    r.kind = fa::NativeRoute::kDirectory;
    r.files = files;
    REQUIRE(h.server->add_route("GET", pattern, std::move(r)) == "");
  }
  REQUIRE(h.listen() == "");

  const std::vector<std::pair<std::string, bool>> batch = {
      {"GET /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /s/sub/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=6-\r\n\r\n", false},
      {"HEAD /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n", true},
      {"GET /s/%2e%2e/secret.txt HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /s/link.txt HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /s/ HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /s/sub HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /s/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1048576-1048580\r\n\r\n", false},
      {"GET /s/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999-\r\n\r\n", false},
      {"GET /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n", false},
  };
  std::vector<HttpResponse> responses(batch.size());
  std::vector<std::string> errors(batch.size());
  HttpResponse conditional;
  std::string client_error;
  const int rc = h.run([&] {
    const int fd = fa_test::connect_loopback(h.port, 5000);
    if (fd < 0) {
      client_error = "connect failed";
      return;
    }
    std::string all;
    for (const auto& b : batch) all += b.first;
    if (!fa_test::send_all(fd, all.data(), all.size())) client_error = "send failed";
    std::string pending;
    for (std::size_t i = 0; i < batch.size(); ++i)
      errors[i] = fa_test::read_response(fd, pending, batch[i].second, &responses[i]);
    const std::string etag = responses[0].header("etag");
    const std::string req = "GET /s/big.bin HTTP/1.1\r\nHost: t\r\nIf-None-Match: " + etag + "\r\n\r\n";
    if (!fa_test::send_all(fd, req.data(), req.size())) client_error = "send failed";
    const std::string err = fa_test::read_response(fd, pending, false, &conditional);
    if (!err.empty()) client_error = err;
    ::close(fd);
  });
  REQUIRE(client_error == "");
  for (std::size_t i = 0; i < batch.size(); ++i) {
    INFO(batch[i].first);
    REQUIRE(errors[i] == "");
  }
  CHECK(responses[0].status == 200);
  CHECK(responses[0].body == big);
  CHECK(responses[0].header("content-type") == "application/octet-stream");
  CHECK(responses[0].header("cache-control") == "max-age=60");
  CHECK(responses[1].status == 206);
  CHECK(responses[1].body == "world");
  CHECK(responses[1].header("content-range") == "bytes 6-10/11");
  CHECK(responses[2].status == 200);
  CHECK(responses[2].header("content-length") == std::to_string(big.size()));
  CHECK(responses[2].body.empty());
  CHECK(responses[3].status == 404);
  CHECK(responses[4].status == 404);
  CHECK(responses[4].body.find("SECRET") == std::string::npos);
  CHECK(responses[5].body == "<h1>home</h1>");
  CHECK(responses[5].header("content-type") == "text/html; charset=utf-8");
  CHECK(responses[6].status == 307);
  CHECK(responses[6].header("location") == "http://t/s/sub/");
  CHECK(responses[7].status == 206);
  CHECK(responses[7].body == big.substr(1048576, 5));
  CHECK(responses[8].status == 416);
  CHECK(responses[8].header("content-range") == "bytes */" + std::to_string(big.size()));
  CHECK(responses[9].body == big);
  CHECK(conditional.status == 304);
  CHECK(conditional.body.empty());
  CHECK(h.app.requests == 0);  // every request answered natively
  CHECK(h.app.native_responses == static_cast<int>(batch.size()) + 1);
  CHECK(h.app.errors.empty());
  CHECK(fa::live_handles() == 0);
  CHECK(rc == 0);
  std::filesystem::remove_all(std::filesystem::path(root).parent_path());
}
