// PrefixIndex: which entries of an ordered table can match a path, by each entry's literal prefix.
//
// Every entry has a key: the literal text its path pattern must start with (kPrefix), or the whole text it must be
// (kExact; Python's `$` also matches before one final "\n", so a kExact key K is a candidate for "K" and "K\n").
// lookup() answers with the entries whose key fits the path, in table order — a superset of the entries that can
// match, so the caller still asks each candidate itself. An entry with the empty prefix key is a candidate for
// every path (that is how the caller keeps entries it cannot reason about).
//
// Built once, then read only: a byte trie whose nodes carry precomputed candidate sets, so a lookup is one walk
// over the path's bytes and allocates nothing. No Python, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fa {

class PrefixIndex {
 public:
  enum class Kind : std::uint8_t { kPrefix, kExact };
  static constexpr std::uint32_t kNoSet = UINT32_MAX;

  // The answer of lookup(): the candidates are sets()[first], merged in table order with sets()[second] when
  // second != kNoSet (a path "K\n" where both a longer key and an exact key K apply; rare).
  struct Result {
    std::uint32_t first = 0;
    std::uint32_t second = kNoSet;
  };

  // Entries are numbered 0, 1, ... in the order they are added (the table order).
  void add(std::string_view key, Kind kind);
  // Precomputes the candidate sets; call once after the last add() and before lookup().
  void build();
  Result lookup(std::string_view path) const;

  // The distinct candidate sets, each ascending entry numbers. sets()[0] is the set for a path no key fits.
  const std::vector<std::vector<std::uint32_t>>& sets() const { return sets_; }
  std::size_t size() const { return entries_; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;  // (byte, node), few per node: linear search
    std::vector<std::uint32_t> prefix_here;  // entries whose kPrefix key ends at this node
    std::vector<std::uint32_t> exact_here;   // entries whose kExact key ends at this node
    std::uint32_t acc = 0;              // set: every kPrefix key on the way from the root to here, this node's too
    std::uint32_t acc_exact = kNoSet;   // set: acc plus exact_here (when exact_here is not empty)
    std::uint32_t exact_only = kNoSet;  // set: exact_here alone
  };
  std::uint32_t child(std::uint32_t node, unsigned char byte) const;
  std::uint32_t add_set(std::vector<std::uint32_t> set);

  std::vector<Node> nodes_{Node{}};
  std::vector<std::vector<std::uint32_t>> sets_;
  std::uint32_t entries_ = 0;
  bool built_ = false;
};

}  // namespace fa
