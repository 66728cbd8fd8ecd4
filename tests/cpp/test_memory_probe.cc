// core/memory_probe.h: the guard the bindings put before calling OpenSSL on a pointer read out of Python's
// private ssl.SSLContext layout. Unreadable memory must be reported, never touched.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "catch_compat.h"
#include "core/memory_probe.h"

TEST_CASE("memory_readable: mapped memory yes; null, misaligned, unmapped and PROT_NONE pages no", "[probe]") {
  std::vector<std::uint64_t> heap(512, 7);
  CHECK(fa::memory_readable(heap.data(), heap.size() * sizeof heap[0]));
  CHECK_FALSE(fa::memory_readable(nullptr, 8));
  CHECK_FALSE(fa::memory_readable(reinterpret_cast<const char*>(heap.data()) + 1, 8));

  const long page = ::sysconf(_SC_PAGESIZE);
  void* none = ::mmap(nullptr, static_cast<std::size_t>(page), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(none != MAP_FAILED);
  CHECK_FALSE(fa::memory_readable(none, 64));
  ::munmap(none, static_cast<std::size_t>(page));
  CHECK_FALSE(fa::memory_readable(none, 64));  // unmapped now

  // A readable page followed by an inaccessible one: a probe across the boundary fails.
  char* two = static_cast<char*>(::mmap(nullptr, static_cast<std::size_t>(2 * page), PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(two != MAP_FAILED);
  REQUIRE(::mprotect(two + page, static_cast<std::size_t>(page), PROT_NONE) == 0);
  CHECK(fa::memory_readable(two + page - 256, 256));
  CHECK_FALSE(fa::memory_readable(two + page - 256, 512));
  ::munmap(two, static_cast<std::size_t>(2 * page));
}
