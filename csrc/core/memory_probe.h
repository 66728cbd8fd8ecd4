// Whether memory can be read without faulting: a guard before an object whose address was read out of another
// library's private layout is handed to code that dereferences it (a wrong layout then means an error, not a
// crash). The bytes are written into a pipe: the kernel reports an unreadable buffer as EFAULT instead of raising
// SIGSEGV (process_vm_readv would do the same, but container seccomp profiles refuse it).
#pragma once

#include <cstddef>

namespace fa {

// True when `len` bytes from `p` are mapped and readable now, and `p` is aligned for a pointer-holding struct.
// False too when no pipe can be made (descriptors exhausted): the caller treats it as "cannot vouch for it".
bool memory_readable(const void* p, std::size_t len);

}  // namespace fa
