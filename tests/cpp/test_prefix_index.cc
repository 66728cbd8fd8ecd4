// http/prefix_index.*: the candidate sets must be exactly the entries whose key fits the path (compared with a
// direct scan over random tables and paths), in table order.
#include <algorithm>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/prefix_index.h"

namespace {

using Kind = fa::PrefixIndex::Kind;
struct Entry {
  std::string key;
  Kind kind;
};

// What the index must answer: every entry whose key fits the path, in table order.
std::vector<std::uint32_t> scan(const std::vector<Entry>& entries, const std::string& path) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    const bool fits = e.kind == Kind::kPrefix ? path.compare(0, e.key.size(), e.key) == 0
                                              : path == e.key || path == e.key + "\n";
    if (fits) out.push_back(i);
  }
  return out;
}

std::vector<std::uint32_t> candidates(const fa::PrefixIndex& index, const std::string& path) {
  const auto r = index.lookup(path);
  std::vector<std::uint32_t> out = index.sets()[r.first];
  if (r.second != fa::PrefixIndex::kNoSet) {
    const auto& more = index.sets()[r.second];
    std::vector<std::uint32_t> all;
    std::merge(out.begin(), out.end(), more.begin(), more.end(), std::back_inserter(all));
    out = all;
  }
  return out;
}

fa::PrefixIndex build(const std::vector<Entry>& entries) {
  fa::PrefixIndex index;
  for (const Entry& e : entries) index.add(e.key, e.kind);
  index.build();
  return index;
}

}  // namespace

TEST_CASE("prefix index: a Starlette-shaped table", "[prefix_index]") {
  const std::vector<Entry> entries = {
      {"/openapi.json", Kind::kExact}, {"/docs", Kind::kExact},      {"/r1/items/", Kind::kPrefix},
      {"/r10/items/", Kind::kPrefix},  {"", Kind::kPrefix},          {"/static/", Kind::kPrefix},
      {"/", Kind::kExact},             {"/r1/items/", Kind::kPrefix}, {"/", Kind::kPrefix}};
  const fa::PrefixIndex index = build(entries);
  CHECK(index.size() == entries.size());
  CHECK(candidates(index, "/r1/items/5") == std::vector<std::uint32_t>{2, 4, 7, 8});
  CHECK(candidates(index, "/r10/items/5") == std::vector<std::uint32_t>{3, 4, 8});
  CHECK(candidates(index, "/docs") == std::vector<std::uint32_t>{1, 4, 8});
  CHECK(candidates(index, "/docs\n") == std::vector<std::uint32_t>{1, 4, 8});  // `$` matches before a final "\n"
  CHECK(candidates(index, "/docs/") == std::vector<std::uint32_t>{4, 8});
  CHECK(candidates(index, "/") == std::vector<std::uint32_t>{4, 6, 8});
  CHECK(candidates(index, "") == std::vector<std::uint32_t>{4});
  CHECK(candidates(index, "nothing") == std::vector<std::uint32_t>{4});
}

TEST_CASE("prefix index: exact key K and a longer key through K\\n both apply", "[prefix_index]") {
  const std::vector<Entry> entries = {{"/a\n", Kind::kPrefix}, {"/a", Kind::kExact}, {"/a\nb", Kind::kExact}};
  const fa::PrefixIndex index = build(entries);
  CHECK(candidates(index, "/a\n") == std::vector<std::uint32_t>{0, 1});
  CHECK(candidates(index, "/a\nb") == std::vector<std::uint32_t>{0, 2});
  CHECK(candidates(index, "/a\nb\n") == std::vector<std::uint32_t>{0, 2});
}

TEST_CASE("prefix index: random tables agree with a direct scan", "[prefix_index]") {
  std::mt19937 rng(12345);
  const std::string alphabet = "/ab\n";
  auto random_string = [&](std::size_t max_len) {
    std::string s;
    const std::size_t len = rng() % (max_len + 1);
    for (std::size_t i = 0; i < len; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int round = 0; round < 300; ++round) {
    std::vector<Entry> entries;
    const std::size_t count = rng() % 12;
    for (std::size_t i = 0; i < count; ++i) {
      entries.push_back({random_string(4), rng() % 2 == 0 ? Kind::kPrefix : Kind::kExact});
    }
    const fa::PrefixIndex index = build(entries);
    for (int probe = 0; probe < 60; ++probe) {
      const std::string path = random_string(6);
      INFO("round " << round << " path '" << path << "'");
      REQUIRE(candidates(index, path) == scan(entries, path));
    }
  }
}
