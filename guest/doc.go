// Package guest holds pagecast's test guest: a tiny freestanding 32-bit x86
// program that dirties guest memory in named patterns, so that pagecast has a
// real virtual machine to profile, predict and migrate. The same multiboot
// ELF image boots under QEMU (-kernel pagecast-guest.elf -append "...") and
// under pagecast's own KVM monitor (package vmm), so both are driven and
// measured the same way.
//
// The image is built from entry.S, guest.c and guest.ld by the Makefile in
// this directory and committed; Image returns the embedded copy and Load
// parses it for a monitor.
//
// # Memory layout (guest physical)
//
//	[0, 1 MiB)        never touched by the guest
//	[1 MiB, 2 MiB)    the image: code, data, the status page, stacks
//	[2 MiB, 4 MiB)    the replay table: up to ReplayTableMax u32 page numbers
//	[4 MiB, top)      the arena, where workloads write
//
// The guest never initialises the arena itself (a guest here runs about a
// million instructions per second); the host fills it with a realistic mix
// of zero, repeated-word, text and random pages before boot (FillArena, or
// WriteRAMFile for the file QEMU maps as the guest's RAM).
//
// # Boot
//
// The boot CPU enters at the ELF entry point as multiboot specifies (EAX =
// BootMagic, EBX = multiboot info with mem_upper and the command line).
// Additional vCPUs, started by pagecast's monitor only, enter at the same
// point with EAX = APMagic, EBX = the same multiboot info and ESI = their
// index; they wait until the boot CPU has parsed the command line, then run
// their share of the workload. A CPU whose workload is finished, or idle,
// halts with interrupts off (a KVM_EXIT_HLT for the monitor).
//
// # Command line
//
// Space-separated key=value pairs, integers in decimal; a leading word
// without '=' (the image name QEMU and GRUB put first) is skipped, anything
// else unknown fails the boot. Workload.Cmdline writes it; the keys are
// workload (idle, hotset, uniform, sweep, zipf, phased, stream, replay),
// cpus, write (word: one 32-bit store into the page at an offset that moves
// with every write; page: rep stosl of the whole page), delay (busy-loop
// iterations between writes), gate (1: wait for the host's go), seed, hot
// (hot set pages), p (probability that a write hits the hot set, in 1/65536),
// period (phased: writes between hot set moves) and loops (stream and
// replay: passes, 0 for ever).
//
// Sweep, stream and replay give CPU i the pages or table entries i, i+N, ...;
// the random workloads run one xorshift32 generator per CPU, seeded from seed
// and the CPU index. zipf is log-uniform by octave: it picks an octave j
// uniformly, then a page number x uniformly in [2^j, 2^(j+1)) (redrawing
// when x is past the arena) and writes arena page x-1, so page x gets
// density ~1/x, a Zipf law with s ≈ 1 with the hottest pages at the start
// of the arena.
//
// # Serial console
//
// The boot CPU prints one banner line on COM1, "pagecast-guest v1
// workload=NAME cpus=N ... arena=FIRST+PAGES pages", then "pagecast-guest
// done" when a finite workload ends, or "pagecast-guest error: ..." for a bad
// command line (the status page then says StateFailed).
//
// # Status page
//
// The page at the ELF symbol pc_status (Kernel.StatusAddr) tells the host
// what the guest is doing; ReadStatus decodes it and the Off* constants give
// its layout. Every write a CPU completes adds one to its 64-bit progress
// counter, so for a sweep that has not wrapped, the progress made is the
// number of distinct pages written. The host writes two fields: go (Release)
// to open the gate, and the replay count (WriteReplayTable), either before
// boot or while the guest waits at the gate.
package guest
