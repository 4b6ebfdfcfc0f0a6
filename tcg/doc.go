// Package tcg is pagecast's dirty-page tracking for QEMU guests without KVM:
// a QEMU TCG plugin (dirty.c, built into pagecast-dirty.so by gen.go and
// embedded) that records which guest-physical pages the guest writes, per
// epoch, in a shared-memory area, and the Go side that ships the plugin and
// reads the area. It is the TCG counterpart of the eBPF programs in bpf/.
//
// # Running QEMU with the plugin
//
// WritePlugin writes the plugin into a directory; PluginArg makes the value
// of QEMU's -plugin option:
//
//	qemu-system-x86_64 -accel tcg ... -plugin /run/pagecast-dirty.so,shm=/dev/shm/vm1,pages=262144
//
// shm= is the area's path (default /dev/shm/pagecast-tcg.<qemu pid>,
// removed when QEMU exits normally, and by RemoveStale once a QEMU killed
// before it could has gone; FindShm finds it from a QEMU's pid);
// pages= is the number of 4 KiB pages recorded (default 1 Mi): the RAM's
// pages under QEMU 7.2, its guest-physical frames under QEMU 8.2 and later
// (below). The plugin calls the functions of plugin API version 1 (QEMU
// 7.2), which QEMU 10.x still has; it declares version 1 to a QEMU that
// still exports version 1's deprecated qemu_plugin_n_vcpus, 2 to one that
// no longer does (QEMU 9.0 and later, which load version 2 and up only). A
// QEMU that refuses it says so on stderr; ExplainLoadError turns that into
// one line.
//
// # What is recorded
//
// For every guest store the plugin asks QEMU for the store's physical
// address (qemu_plugin_get_hwaddr, qemu_plugin_hwaddr_phys_addr) and marks
// its page frame in the current epoch's buffer. Stores to MMIO are counted,
// not marked; stores at or beyond the capacity are counted as out of range.
// A store straddling two pages marks both.
//
// QEMU 7.2's "physical address" is the RAM block's offset plus the offset
// within it plus the address of the block's memory region. For the main
// RAM (the first block, pc.ram or a memory backend) that is the guest-
// physical address below 4 GiB and, above it, the offset into RAM: on a
// pc machine with more than about 3 GiB the high part is reported at its
// RAM offset (which is also its offset in a shared memory-backend file),
// not at 4 GiB and up. Stores into other blocks (the BIOS's ROM while
// SeaBIOS boots) land past the RAM's size, so a capacity of exactly the
// guest's RAM counts them as out of range instead of marking bogus pages.
//
// QEMU 8.2 gives the guest-physical address itself (qemu_plugin_hwaddr_phys_addr
// returns the TLB entry's physical address since "plugin: Simplify struct
// qemu_plugin_hwaddr", 2023): RAM above 4 GiB is reported there. Readers
// ask QEMU's version (qemu.PluginAddresses) and map such pages through the
// guest's layout (qemu.Layout), as KVM's; pages= then counts the frames up
// to the RAM's top (qemu.PluginPages). Run on QEMU 7.2.22 and 10.0.2.
//
// # Epochs
//
// The collector owns the epoch: SetEpoch(e) makes the plugin mark into
// buffer e&1 from now on. To close epoch e: SetEpoch(e+1), wait Grace,
// then ReadEpoch(e) lists its pages in ascending order and clears its
// buffer for epoch e+2. The plugin loads the epoch with a relaxed load on
// every store, so a store racing the switch lands in either epoch, never in
// neither; one whose vCPU thread is preempted for longer than Grace between
// the load and its mark lands in epoch e+2. Before the first SetEpoch the
// plugin records into epoch 0 (the boot): read and discard it.
//
// # The area (little endian)
//
//	offset  size  field
//	0       4     magic 0x47544350 ('PCTG')
//	4       4     layout version (1)
//	8       4     QEMU's oldest plugin API version (info->version.min)
//	12      4     QEMU's plugin API version (info->version.cur)
//	16      8     capacity: page frames per buffer
//	24      4     epoch, written by the collector, read by the plugin
//	28      4     state: 0 starting, 1 running, 2 exited (QEMU's atexit ran)
//	32      4     QEMU's pid
//	36      4     number of per-vCPU slots (60)
//	40      4     the plugin API version the plugin declared (1 or 2)
//	256     64·60 per-vCPU slots, one 64-byte cache line each: u64 stores
//	              seen, u64 out of range, u64 MMIO; vCPUs 59 and up share
//	              the last slot and add to it atomically
//	4096    cap   buffer 0: byte p is 1 when page frame p was written in an
//	              even epoch
//	4096+cap cap  buffer 1: the same for odd epochs
//
// The plugin writes magic and state last; Open checks magic, version and
// that the file really holds both buffers of the header's capacity.
//
// # Cost
//
// Per store: QEMU's helper call, the TLB lookup behind
// qemu_plugin_get_hwaddr, QEMU 7.2's RAM block lookup behind
// qemu_plugin_hwaddr_phys_addr, and in the plugin one relaxed counter store
// on the vCPU's own cache line, one relaxed load of the epoch and a byte
// tested before it is stored, so a page written again leaves its cache line
// clean. No syscall and no lock. BenchmarkPluginOverhead measures the
// guest's speed with the plugin against without.
package tcg
