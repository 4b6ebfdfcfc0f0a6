/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types pagecast's BPF programs touch, declared with
 * preserve_access_index so that libbpf-style CO-RE relocations (applied by
 * cilium/ebpf at load time against the running kernel's BTF) fix up every
 * field offset. Only the fields read are declared; the layouts of the real
 * structures do not matter here. This stands in for a 3 MB vmlinux.h.
 */
#ifndef PAGECAST_KVM_H
#define PAGECAST_KVM_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef signed char __s8;
typedef signed short __s16;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;

/* From uapi/linux/bpf.h: the few constants used. */
enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};
#define BPF_F_MMAPABLE (1U << 10)
#define BPF_ANY 0

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct hlist_node {
	struct hlist_node *next;
};

struct hlist_head {
	struct hlist_node *first;
};

struct kvm_memory_slot {
	struct hlist_node id_node[2];
	u64 base_gfn;
	unsigned long npages;
	short id;
};

struct kvm_memslots {
	u64 generation;
	struct hlist_head id_hash[128];
	int node_idx;
};

struct kvm {
	struct kvm_memslots *memslots[1];
};

struct kvm_dirty_ring {
	u32 dirty_index;
};

struct kvm_vcpu {
	struct kvm *kvm;
	struct kvm_dirty_ring dirty_ring;
};

/* Classic tracepoint records (include/trace/events/kvm.h, arch/x86/kvm/trace.h). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_kvm_dirty_ring_push {
	struct trace_entry ent;
	int index;
	u32 dirty_index;
	u32 reset_index;
	u32 slot;
	u64 offset;
};

struct trace_event_raw_kvm_dirty_ring_reset {
	struct trace_entry ent;
	int index;
	u32 dirty_index;
	u32 reset_index;
};

struct trace_event_raw_kvm_page_fault {
	struct trace_entry ent;
	unsigned int vcpu_id;
	unsigned long guest_rip;
	u64 fault_address;
	u64 error_code;
};

#pragma clang attribute pop

#endif
