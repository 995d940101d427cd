#pragma once

namespace eldric {

// The process holds TLS private keys, session signing keys and, in a
// snapshot, every client's key hash: a core dump would write them to disk
// for whoever reads /var/crash or /proc/<pid>/coredump_filter's files.
// Turns core dumps off (RLIMIT_CORE 0) and makes the process non-dumpable
// (PR_SET_DUMPABLE 0: no core, and no ptrace by other processes of the
// same user). Set ELDRIC_ALLOW_CORE_DUMPS=1 to keep them (debugging).
void forbidCoreDumps();

}  // namespace eldric
