#include "http/prefix_index.h"

#include <algorithm>
#include <iterator>

namespace fa {

namespace {
std::vector<std::uint32_t> merged(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
  std::vector<std::uint32_t> out;
  out.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}
}  // namespace

std::uint32_t PrefixIndex::child(std::uint32_t node, unsigned char byte) const {
  for (const auto& [b, n] : nodes_[node].children) {
    if (b == byte) return n;
  }
  return kNoSet;
}

void PrefixIndex::add(std::string_view key, Kind kind) {
  std::uint32_t node = 0;
  for (const char ch : key) {
    const auto byte = static_cast<unsigned char>(ch);
    std::uint32_t next = child(node, byte);
    if (next == kNoSet) {
      next = static_cast<std::uint32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  auto& list = kind == Kind::kPrefix ? nodes_[node].prefix_here : nodes_[node].exact_here;
  list.push_back(entries_++);
  built_ = false;
}

std::uint32_t PrefixIndex::add_set(std::vector<std::uint32_t> set) {
  sets_.push_back(std::move(set));
  return static_cast<std::uint32_t>(sets_.size() - 1);
}

void PrefixIndex::build() {
  sets_.clear();
  // Nodes are created after their parent, so one pass in creation order sees every parent first.
  std::vector<std::uint32_t> parent(nodes_.size(), kNoSet);
  for (std::uint32_t n = 0; n < nodes_.size(); ++n) {
    for (const auto& [b, c] : nodes_[n].children) parent[c] = n;
  }
  for (std::uint32_t n = 0; n < nodes_.size(); ++n) {
    Node& node = nodes_[n];
    const std::vector<std::uint32_t> empty;
    const std::vector<std::uint32_t>& inherited = n == 0 ? empty : sets_[nodes_[parent[n]].acc];
    node.acc = n == 0 || !node.prefix_here.empty() ? add_set(merged(inherited, node.prefix_here))
                                                   : nodes_[parent[n]].acc;
    if (!node.exact_here.empty()) {
      node.acc_exact = add_set(merged(sets_[node.acc], node.exact_here));
      node.exact_only = add_set(node.exact_here);
    }
  }
  built_ = true;
}

PrefixIndex::Result PrefixIndex::lookup(std::string_view path) const {
  Result r;
  if (!built_) return r;  // sets_ is empty until build(): callers check size() == 0 first
  std::uint32_t node = 0;
  std::uint32_t before_last = kNoSet;  // the node of path[0 .. n-1) when the walk gets that far
  std::size_t depth = 0;
  const std::size_t n = path.size();
  while (depth < n) {
    if (depth + 1 == n) before_last = node;
    const std::uint32_t next = child(node, static_cast<unsigned char>(path[depth]));
    if (next == kNoSet) break;
    node = next;
    ++depth;
  }
  const Node& at = nodes_[node];
  const bool trailing_newline = n > 0 && path[n - 1] == '\n' && before_last != kNoSet &&
                                nodes_[before_last].exact_only != kNoSet;
  if (depth == n) {
    r.first = at.acc_exact != kNoSet ? at.acc_exact : at.acc;
    // "K\n" walked through to a node of its own: K's exact entries are candidates as well.
    if (trailing_newline) r.second = nodes_[before_last].exact_only;
  } else {
    // The walk stopped at `node`. When only the final "\n" was left, `node` is K itself.
    r.first = trailing_newline && before_last == node ? at.acc_exact : at.acc;
  }
  return r;
}

}  // namespace fa
