// Package bpf holds pagecast's eBPF programs (dirty.c, built by bpf2go into
// the committed dirty_bpfel.go and dirty_bpfel.o) and loads them.
//
// The programs sit on KVM's dirty-tracking hooks and keep, per guest page
// frame of one virtual machine (filtered by the VMM's process id), a 48-bit
// history shift register over epochs and a write count, in an mmap-able
// array the collector reads without copying the kernel's work. Hooks, best
// first: fentry on mark_page_dirty_in_slot (every dirtied page, ring or
// bitmap mode), the kvm_dirty_ring_push tracepoint as tp_btf, raw or classic
// tracepoint (dirty ring mode), and kvm_page_fault write faults (dirty bitmap
// mode with hardware virtualisation). Probe tells which load and attach on
// the running kernel, and Load picks the best one that does.
package bpf
