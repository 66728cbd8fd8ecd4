// Router: the native route table (static O(1) paths, typed parameters, HEAD for GET, 405 + Allow, fall-through).
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/router.h"

namespace {

fa::NativeRoute text_route(const char* body) {
  fa::NativeRoute r;
  r.kind = fa::NativeRoute::kStatic;
  r.body = body;
  return r;
}

struct Matched {
  fa::Router::Match kind = fa::Router::Match::kNone;
  const fa::NativeRoute* route = nullptr;
  std::vector<std::pair<std::string, std::string>> params;
  std::string allow;
};

Matched match(const fa::Router& r, std::string_view method, std::string_view path) {
  Matched m;
  fa::RouteParams params;
  m.kind = r.match(method, path, &m.route, &params, &m.allow);
  if (m.kind == fa::Router::Match::kFound)
    for (int i = 0; i < params.count; ++i) m.params.emplace_back(params.names[i], params.values[i]);
  return m;
}

using P = std::vector<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("router: static routes", "[router]") {
  fa::Router r;
  CHECK(r.empty());
  REQUIRE(r.add("GET", "/", text_route("root")) == "");
  REQUIRE(r.add("GET", "/health", text_route("ok")) == "");
  REQUIRE(r.add("GET", "/a/b/c", text_route("abc")) == "");
  REQUIRE(r.add("GET", "/a/", text_route("a-slash")) == "");
  CHECK_FALSE(r.empty());

  Matched m = match(r, "GET", "/health");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.route->body == "ok");
  CHECK(m.route->pattern == "/health");
  CHECK(m.params.empty());
  CHECK(match(r, "GET", "/").route->body == "root");
  CHECK(match(r, "GET", "/a/b/c").route->body == "abc");
  CHECK(match(r, "GET", "/a/").route->body == "a-slash");
  // Exact matching: no trailing-slash or case folding.
  CHECK(match(r, "GET", "/a").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/health/").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/Health").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/healthz").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "").kind == fa::Router::Match::kNone);
}

TEST_CASE("router: typed parameters", "[router]") {
  fa::Router r;
  REQUIRE(r.add("GET", "/users/{id:int}", text_route("user")) == "");
  REQUIRE(r.add("GET", "/users/{id:int}/posts/{slug}", text_route("post")) == "");
  REQUIRE(r.add("GET", "/names/{name:str}", text_route("name")) == "");
  REQUIRE(r.add("GET", "/files/{p:path}", text_route("file")) == "");

  Matched m = match(r, "GET", "/users/42");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.route->body == "user");
  CHECK(m.params == P{{"id", "42"}});

  m = match(r, "GET", "/users/7/posts/hello-world");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.route->body == "post");
  CHECK(m.params == P{{"id", "7"}, {"slug", "hello-world"}});

  // {int} accepts digits only.
  CHECK(match(r, "GET", "/users/abc").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/-1").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/1.5").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/42/").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/42/extra").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/users/7/posts/").kind == fa::Router::Match::kNone);

  // {name} / {name:str}: one non-empty segment, raw (not percent-decoded).
  m = match(r, "GET", "/names/J%C3%BCrgen");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.params == P{{"name", "J%C3%BCrgen"}});
  CHECK(match(r, "GET", "/names/a/b").kind == fa::Router::Match::kNone);

  // {p:path}: the rest of the path, slashes included.
  m = match(r, "GET", "/files/a/b/c.txt");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.params == P{{"p", "a/b/c.txt"}});
  m = match(r, "GET", "/files/x");
  CHECK(m.params == P{{"p", "x"}});
  m = match(r, "GET", "/files/dir/");
  CHECK(m.params == P{{"p", "dir/"}});
  CHECK(match(r, "GET", "/files/").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/files").kind == fa::Router::Match::kNone);
}

TEST_CASE("router: static paths win over parameters; parameters are tried in registration order", "[router]") {
  fa::Router r;
  REQUIRE(r.add("GET", "/items/{id:int}", text_route("by-id")) == "");
  REQUIRE(r.add("GET", "/items/{name}", text_route("by-name")) == "");
  REQUIRE(r.add("GET", "/items/latest", text_route("latest")) == "");
  CHECK(match(r, "GET", "/items/latest").route->body == "latest");
  CHECK(match(r, "GET", "/items/12").route->body == "by-id");
  CHECK(match(r, "GET", "/items/twelve").route->body == "by-name");
}

TEST_CASE("router: HEAD is answered by GET routes; 405 lists the allowed methods", "[router]") {
  fa::Router r;
  REQUIRE(r.add("GET", "/s", text_route("get-s")) == "");
  REQUIRE(r.add("POST", "/s", text_route("post-s")) == "");
  REQUIRE(r.add("POST", "/only-post", text_route("p")) == "");
  REQUIRE(r.add("GET", "/d/{id:int}", text_route("get-d")) == "");
  REQUIRE(r.add("DELETE", "/d/{id:int}", text_route("del-d")) == "");
  REQUIRE(r.add("HEAD", "/h", text_route("explicit-head")) == "");
  REQUIRE(r.add("GET", "/h", text_route("get-h")) == "");

  CHECK(match(r, "HEAD", "/s").route->body == "get-s");
  CHECK(match(r, "POST", "/s").route->body == "post-s");
  CHECK(match(r, "HEAD", "/d/3").route->body == "get-d");
  CHECK(match(r, "DELETE", "/d/3").route->body == "del-d");
  CHECK(match(r, "HEAD", "/h").route->body == "explicit-head");  // an explicit HEAD route wins
  CHECK(match(r, "GET", "/h").route->body == "get-h");

  Matched m = match(r, "PUT", "/s");
  CHECK(m.kind == fa::Router::Match::kMethodNotAllowed);
  CHECK(m.allow == "GET, POST, HEAD");
  m = match(r, "GET", "/only-post");
  CHECK(m.kind == fa::Router::Match::kMethodNotAllowed);
  CHECK(m.allow == "POST");
  m = match(r, "HEAD", "/only-post");  // no GET: HEAD is not allowed either
  CHECK(m.kind == fa::Router::Match::kMethodNotAllowed);
  m = match(r, "PATCH", "/d/9");
  CHECK(m.kind == fa::Router::Match::kMethodNotAllowed);
  CHECK(m.allow == "GET, DELETE, HEAD");
  m = match(r, "PUT", "/h");
  CHECK(m.allow == "HEAD, GET");
  // A path that no route has falls through to the app whatever the method.
  CHECK(match(r, "PUT", "/nowhere").kind == fa::Router::Match::kNone);
  CHECK(match(r, "GET", "/d/x").kind == fa::Router::Match::kNone);
}

TEST_CASE("router: a method mismatch on one pattern does not hide a later pattern that matches", "[router]") {
  // Starlette semantics, which the native table must keep (issue 3, "the same HTTP semantics as Python routes"):
  // routes are tried in order, a full match (path and method) wins over an earlier partial match (path only);
  // 405 only when no route matches both.
  fa::Router r;
  REQUIRE(r.add("POST", "/items/{id:int}", text_route("post-item")) == "");
  REQUIRE(r.add("GET", "/items/{name}", text_route("get-item")) == "");
  Matched m = match(r, "GET", "/items/5");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.route->body == "get-item");
  CHECK(m.params == P{{"name", "5"}});
  m = match(r, "PUT", "/items/5");
  CHECK(m.kind == fa::Router::Match::kMethodNotAllowed);

  // Same with a static path that has only other methods, and a parameterised GET route.
  fa::Router r2;
  REQUIRE(r2.add("POST", "/users/me", text_route("post-me")) == "");
  REQUIRE(r2.add("GET", "/users/{name}", text_route("get-user")) == "");
  m = match(r2, "GET", "/users/me");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.route->body == "get-user");
}

TEST_CASE("router: registration errors", "[router]") {
  fa::Router r;
  REQUIRE(r.add("GET", "/dup", text_route("1")) == "");
  REQUIRE(r.add("GET", "/p/{id:int}", text_route("1")) == "");
  const std::size_t routes_before = r.routes().size();
  CHECK(r.add("GET", "/dup", text_route("2")).find("duplicate native route: GET /dup") != std::string::npos);
  CHECK(r.add("GET", "/p/{id:int}", text_route("2")).find("duplicate") != std::string::npos);
  CHECK(r.add("POST", "/dup", text_route("ok")) == "");  // another method is not a duplicate

  struct Bad {
    const char* method;
    const char* pattern;
    const char* error_part;
  };
  const Bad bad[] = {
      {"GET", "", "must start with '/'"},
      {"GET", "relative", "must start with '/'"},
      {"get", "/x", "invalid method"},
      {"", "/x", "invalid method"},
      {"G T", "/x", "invalid method"},
      {"GET", "/a/{", "malformed parameter"},
      {"GET", "/a/{}", "malformed parameter"},
      {"GET", "/a/{id", "malformed parameter"},
      {"GET", "/a/{:int}", "unnamed parameter"},
      {"GET", "/a/{id:float}", "unknown parameter type 'float'"},
      {"GET", "/a/b{id}", "malformed segment"},
      {"GET", "/a/}", "malformed segment"},
      {"GET", "/{p:path}/more", "must be the last segment"},
      {"GET", "/1/2/3/4/5/6/7/8/{x}", "too many segments"},
  };
  for (const Bad& b : bad) {
    INFO(b.method << " " << b.pattern);
    const std::string err = r.add(b.method, b.pattern, text_route("bad"));
    CHECK(err.find(b.error_part) != std::string::npos);
  }
  // A rejected registration leaves no trace: routes() feeds the metrics (a phantom route would be reported).
  CHECK(r.routes().size() == routes_before + 1);  // + the POST /dup above
  CHECK(match(r, "GET", "/dup").route->body == "1");
  CHECK(match(r, "GET", "/p/1").route->body == "1");
}

TEST_CASE("router: no backtracking blow-up on a pathological table", "[router]") {
  // 200 parameterised routes that all share a long common prefix of parameters and differ only at the end, and a
  // long request path that almost matches all of them: matching must stay linear (one pass per route).
  fa::Router r;
  for (int i = 0; i < 200; ++i) {
    const std::string pattern = "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/x" + std::to_string(i);
    REQUIRE(r.add("GET", pattern, text_route("deep")) == "");
  }
  for (int i = 0; i < 50; ++i) REQUIRE(r.add("GET", "/p" + std::to_string(i) + "/{rest:path}", text_route("path")) == "");
  std::string path;
  for (int i = 0; i < 7; ++i) path += "/" + std::string(2000, static_cast<char>('a' + i));
  CHECK(match(r, "GET", path + "/nomatch").kind == fa::Router::Match::kNone);
  Matched m = match(r, "GET", path + "/x199");
  REQUIRE(m.kind == fa::Router::Match::kFound);
  CHECK(m.params.size() == 7);
  std::string long_rest(100000, '/');
  CHECK(match(r, "GET", "/p49" + long_rest).kind == fa::Router::Match::kFound);
  CHECK(match(r, "GET", long_rest).kind == fa::Router::Match::kNone);
  for (int i = 0; i < 1000; ++i) match(r, "GET", path + "/nomatch");
}
