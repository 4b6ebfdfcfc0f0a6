// Package qemuguest lets pagecast's migration engine move a QEMU virtual
// machine whose guest RAM is shared memory: Source is a running QEMU as the
// engine's migrator.Guest, Dest a QEMU started with -incoming as its
// migrator.Destination.
//
// pagecast moves the RAM itself, reading the source QEMU's RAM file in place
// and writing the destination's. QEMU moves only what pagecast cannot see:
// the vCPU and device state. With the migration capability x-ignore-shared,
// QEMU's own migration stream leaves shared RAM out and carries the device
// state and the small non-shared blocks (option ROMs): about 200 KB for a
// 64 MiB guest. SaveState captures that stream from the paused source
// through a unix socket; Restore feeds it to the destination after the
// engine has filled its RAM; Start is QMP cont.
//
// The pieces, each measured under TCG with QEMU 7.2:
//
//   - Memory: the RAM backend's file (memory-backend-file,share=on, found
//     through qom-get mem-path) or memfd (memory-backend-memfd,share=on,
//     found among /proc/PID/fd), mapped shared. A QEMU without shared RAM is
//     refused with the options that give it. Source.CanSend says a memfd
//     source of QEMU 8.1 or later cannot be sent (migrate asks it): its
//     x-ignore-shared skips only RAM in a named file, so its state would
//     carry the RAM.
//   - Dirty pages: under TCG pagecast's plugin (package tcg) inside QEMU;
//     under KVM the collector's eBPF hooks, with QEMU's dirty ring kept on by
//     set-vcpu-dirty-limit. The plugin sees the vCPUs' stores only, not
//     QEMU's own writes into guest RAM (device DMA): fine for the pagecast
//     guest, which has no such devices; the engine's checksums after the
//     switch-over catch a miss, and the destination's Stop (QMP stop) hands
//     the guest back to the source.
//   - Pause and Resume: QMP stop and cont; cont also runs a source that
//     SaveState left in QEMU's postmigrate state.
//   - Throttle: a cgroup v1 cpu controller group for each vCPU thread
//     (query-cpus-fast's thread ids), its CFS quota the share of a CPU
//     left to that vCPU. QEMU's own cpu-throttle-percentage acts only while QEMU itself
//     migrates, and SIGSTOP stops every thread of QEMU, its monitor too.
//
// Not for TSMC: its stage 3 drops the dirty pages from the destination's
// RAM and catches the guest's first touch with userfaultfd on pagecast's
// own mapping. QEMU's vCPUs touch RAM through QEMU's mapping, which no
// fault reaches: a dropped page comes back zero-filled, and the page the
// source pushes later is refused as present (measured: a destination guest
// whose status page restarted at zero and stopped). Pre-copy, throttle,
// predictive and mecom write every page before Start and are safe.
//
// FromVM and DestFromVM take a QEMU that package qemu started (what `vm
// run --monitor qemu` and the demo do); StartSource and StartDest boot QEMUs
// set up for this (shared RAM, the plugin under TCG, -incoming defer) for
// the tests.
package qemuguest
