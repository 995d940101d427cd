#pragma once

// The kernel's descriptor table grows by doubling as descriptors are
// opened (past 64, 128, 256, 512, ... of them), and in a process with more
// than one thread each growth waits for an RCU grace period
// (expand_fdtable calls synchronize_rcu): 10-20 ms on these VMs, during
// which the thread that opened the descriptor (a worker accepting or
// connecting) stalls with every stream it serves. The Edge crossed 256
// descriptors in its first 200-stream benchmark run and stalled there
// (TTFB p99 16 ms, 8 token events merged). Grown once at start, before
// any thread exists, the table costs no grace period, only its memory
// (8 bytes per slot).

#include <cstddef>

namespace eldric {

// Raises the soft RLIMIT_NOFILE to the hard limit, as Go's runtime does
// and systemd expects of programs that need many descriptors (its soft
// default of 1,024 is for select()'s sake; nothing here uses select()):
// every connection is a descriptor, and a proxied stream is two. Returns
// the soft limit now in force (0 if it could not be read).
size_t raiseDescriptorLimit();

// 65,536 slots: 512 KB of table; a process that goes past them grows the
// table by doubling again (a stall per doubling, each rarer).
inline constexpr size_t kDescriptorTablePresize = 65536;

// Grows this process's descriptor table to hold min(RLIMIT_NOFILE's soft
// limit, cap) descriptors. Call before starting threads. Returns the size
// asked for (0 if nothing was done).
size_t presizeDescriptorTable(size_t cap = kDescriptorTablePresize);

}  // namespace eldric
