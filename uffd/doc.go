// Package uffd fills guest memory on demand, the pull half of post-copy
// migration (stage 3 of TSMC, Song et al.): the destination resumes the guest
// before every page has arrived, and a vCPU that touches a page still
// missing blocks until the page has been fetched from the source.
//
// The mechanism is userfaultfd in MISSING mode over the guest's shared
// memfd mapping (package vmm's Memory). Drop punches the pages still to
// come out of the memfd (madvise MADV_REMOVE), so their next access, by
// the guest through KVM or by the host, raises a userfault instead of
// reading zeros; Faults reports those pages; Fill installs a page's content
// atomically with UFFDIO_COPY and wakes the thread that waits for it. A
// migration receiver pushes pages with Fill in the background and serves
// Faults first, so a page crosses the wire at most once more.
//
// Host code must not touch dropped pages itself: a goroutine that faults on
// one outside a system call (say in copy or bytes.Equal, which the Go
// runtime cannot preempt there) blocks garbage collection's stop-the-world
// and with it the goroutine that would fill the page. Keep the pages the
// monitor reads (the guest status page, the kernel image) out of Drop, or
// fill them before touching them.
package uffd
