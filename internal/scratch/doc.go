// Package scratch makes work directories that do not outlive their maker
// for long. Each holds a lock the making process keeps while it lives
// (flock, which the kernel drops when the process dies, however it dies);
// making one removes those of the same kind whose maker died without
// cleaning up. On /dev/shm such a directory holds a QEMU guest's RAM, which
// a pagecast killed with SIGKILL would otherwise leave there for good.
package scratch
