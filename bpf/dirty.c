//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * pagecast's dirty page profiler: one program per KVM hook, all feeding the
 * same per-page write history.
 *
 * pages[gfn] holds, for one virtual machine (the VMM process target_tgid),
 * a 48-bit history shift register (bit 0: the current epoch, bit k: k
 * epochs ago) packed with the 16 low bits of the epoch it was last shifted
 * to, and a write count. Userspace advances `epoch`; the next write to a
 * page shifts its history by the epochs that passed. The state word is
 * updated with compare-and-swap so vCPUs on other CPUs never tear it.
 */
#include "kvm.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"
#include "bpf_tracing.h"

#define HIST_BITS 48
#define HIST_MASK ((1ULL << HIST_BITS) - 1)
#define MAX_SLOTS 512
#define PFERR_WRITE_MASK 2

struct page_state {
	__u64 state; /* history << 16 | epoch & 0xffff */
	__u64 count; /* writes seen (approximate under concurrent writers) */
};

/* One entry per guest page frame; sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct page_state);
	__uint(max_entries, 1);
} pages SEC(".maps");

/* KVM memory slot id -> first guest page frame. Filled by userspace from
 * the VMM (static slots), or found in the kernel's memslots by the programs
 * that get a pointer to the vCPU (cached per CPU with the memslots
 * generation it was read under). */
struct slot_info {
	__u64 kvm;        /* struct kvm * the entry was read from; 0: static */
	__u64 generation; /* kvm_memslots generation */
	__u64 base_gfn;
	__u64 npages;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct slot_info);
	__uint(max_entries, MAX_SLOTS);
} static_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct slot_info);
	__uint(max_entries, MAX_SLOTS);
} slot_cache SEC(".maps");

/* Per vCPU dirty ring (by its index: the vCPU id): one past the entry KVM
 * last pushed, and where its resets stopped. A page KVM pushed to a ring on
 * hardware virtualisation stays writable, so later writes to it push
 * nothing, until the VMM has harvested the entry and reset the ring: a
 * reader that cannot reset the rings itself (QEMU's are QEMU's) counts the
 * page as possibly written until a reset that is in force has passed its
 * entry. A reset is in force once KVM has flushed the TLBs, at the end of
 * the reset ioctl, after every ring's reset: so a ring's reset index is
 * `pending` until the next ioctl begins (its first ring, vCPU 0's, moves
 * reset_gen on), then it is in force (or, where no ioctl follows, a
 * moment later: userspace's clock). seq is odd while the reset program
 * writes its fields. Filled only when the loader keeps the two
 * programs below. */
#define MAX_RINGS 4096

struct ring_index {
	__u32 seq;
	__u32 pending;       /* the last reset's index */
	__u32 pending_gen;   /* reset_gen when it came; 0: no reset seen */
	__u32 effective;     /* the reset before it, in force */
	__u32 effective_gen; /* 0: none seen */
	__u32 pad;
	__u64 pushed;        /* a u32 index, in 64 bits for compare-and-swap */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ring_index);
	__uint(max_entries, MAX_RINGS);
} rings SEC(".maps");

volatile __u32 reset_gen = 0;

/* Writes recorded are not counted here: they are the sum of pages[].count. */
enum stat {
	STAT_OTHER_VM,     /* events of other processes, ignored */
	STAT_SLOT_UNKNOWN, /* slot not found: event dropped */
	STAT_OUT_OF_RANGE, /* page beyond the pages map: event dropped */
	STAT_RINGBUF_FULL, /* raw event not delivered */
	STAT_CONTENDED,    /* history update lost to concurrent writers */
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} stats SEC(".maps");

/* Raw events, when asked for. */
struct event {
	__u64 time_ns;
	__u64 gfn;
	__u32 epoch;
	__u32 cpu;
};

/* Keeps struct event in the BTF for bpf2go's Go type. */
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

volatile const __u32 target_tgid = 0;
volatile const __u8 emit_events = 0;
volatile __u32 epoch = 0;

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		(*v)++;
}

static __always_inline int ours(void)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid) {
		count(STAT_OTHER_VM);
		return 0;
	}
	return 1;
}

static __always_inline void record(__u64 gfn)
{
	__u32 idx = gfn;
	struct page_state *ps;
	__u64 cur = epoch & 0xffff;
	int i;

	if (gfn > 0xffffffffULL) {
		count(STAT_OUT_OF_RANGE);
		return;
	}
	ps = bpf_map_lookup_elem(&pages, &idx);
	if (!ps) {
		count(STAT_OUT_OF_RANGE);
		return;
	}
	for (i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)&ps->state;
		__u64 last = old & 0xffff, hist = old >> 16, next;

		if (last == cur) {
			if (hist & 1)
				break;
			next = old | (1ULL << 16);
		} else {
			__u64 d = (cur - last) & 0xffff;
			hist = d >= HIST_BITS ? 0 : (hist << d) & HIST_MASK;
			next = ((hist | 1) << 16) | cur;
		}
		if (__sync_val_compare_and_swap(&ps->state, old, next) == old)
			break;
		if (i == 3)
			count(STAT_CONTENDED);
	}
	/* Not atomic: a count may lose an increment when vCPUs on two CPUs
	 * write the same page at the same instant; a locked add would cost
	 * every event. */
	ps->count++;

	if (emit_events) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			count(STAT_RINGBUF_FULL);
			return;
		}
		e->time_ns = bpf_ktime_get_ns();
		e->gfn = gfn;
		e->epoch = epoch;
		e->cpu = bpf_get_smp_processor_id();
		bpf_ringbuf_submit(e, 0);
	}
}

/* static_base finds a slot in the table userspace filled. */
static __always_inline int static_base(__u32 slot, __u64 offset, __u64 *gfn)
{
	struct slot_info *s;

	if (slot >= MAX_SLOTS)
		return -1;
	s = bpf_map_lookup_elem(&static_slots, &slot);
	if (!s || !s->npages || offset >= s->npages)
		return -1;
	*gfn = s->base_gfn + offset;
	return 0;
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/*
 * kernel_base finds the slot's first page frame in KVM's own memslots,
 * reached from the vCPU that owns the dirty ring: vcpu->kvm->memslots[0],
 * then the slot's bucket of the id hash table (hash_32(id, 7), as KVM's
 * id_to_memslot does). The vCPU is cast to its kernel type so the walk is
 * plain (fault-safe) loads rather than helper calls, and the result is
 * cached per CPU with the memslots generation it was read under.
 */
static __always_inline int kernel_base(__u64 ring, __u32 slot, __u64 offset, __u64 *gfn)
{
	__u32 id = slot & 0xffff;
	struct kvm_vcpu *vcpu;
	struct kvm_memslots *slots;
	struct slot_info *c, fresh = {};
	struct hlist_head *head;
	struct hlist_node *n;
	struct kvm *kvm;
	__u64 generation;
	int node_idx, i;

	if ((slot >> 16) != 0 || id >= MAX_SLOTS)
		return -1;
	vcpu = bpf_rdonly_cast((void *)(ring - bpf_core_field_offset(struct kvm_vcpu, dirty_ring)),
			       bpf_core_type_id_kernel(struct kvm_vcpu));
	kvm = vcpu->kvm;
	if (!kvm)
		return -1;
	slots = kvm->memslots[0];
	if (!slots)
		return -1;
	generation = slots->generation;
	c = bpf_map_lookup_elem(&slot_cache, &id);
	if (!c)
		return -1;
	if (c->kvm == (__u64)kvm && c->generation == generation && c->npages) {
		if (offset >= c->npages)
			return -1;
		*gfn = c->base_gfn + offset;
		return 0;
	}

	node_idx = slots->node_idx & 1;
	head = bpf_rdonly_cast((void *)((__u64)slots + bpf_core_field_offset(struct kvm_memslots, id_hash) +
				       (((id * 0x61C88647U) >> (32 - 7)) & 127) * bpf_core_type_size(struct hlist_head)),
			       bpf_core_type_id_kernel(struct hlist_head));
	n = head->first;
	for (i = 0; i < 8 && n; i++) {
		struct kvm_memory_slot *ms = bpf_rdonly_cast(
			(void *)((__u64)n - bpf_core_field_offset(struct kvm_memory_slot, id_node) -
				 node_idx * bpf_core_type_size(struct hlist_node)),
			bpf_core_type_id_kernel(struct kvm_memory_slot));
		if ((__u16)ms->id == id) {
			fresh.kvm = (__u64)kvm;
			fresh.generation = generation;
			fresh.base_gfn = ms->base_gfn;
			fresh.npages = ms->npages;
			bpf_map_update_elem(&slot_cache, &id, &fresh, BPF_ANY);
			if (offset >= fresh.npages)
				return -1;
			*gfn = fresh.base_gfn + offset;
			return 0;
		}
		n = n->next;
	}
	return -1;
}

static __always_inline void ring_push(__u64 ring, __u32 slot, __u64 offset)
{
	__u64 gfn;

	if (!ours())
		return;
	if (static_base(slot, offset, &gfn) == 0) {
		record(gfn);
		return;
	}
	if (kernel_base(ring, slot, offset, &gfn) == 0) {
		record(gfn);
		return;
	}
	count(STAT_SLOT_UNKNOWN);
}

/* Every page KVM pushes to a dirty ring, with typed arguments. */
SEC("tp_btf/kvm_dirty_ring_push")
int BPF_PROG(tp_btf_dirty_ring_push, struct kvm_dirty_ring *ring, __u32 slot, __u64 offset)
{
	ring_push(ctx[0], slot, offset);
	return 0;
}

/* The same, as a raw tracepoint (arguments untyped). */
SEC("raw_tp/kvm_dirty_ring_push")
int BPF_PROG(raw_tp_dirty_ring_push, struct kvm_dirty_ring *ring, __u32 slot, __u64 offset)
{
	ring_push(ctx[0], slot, offset);
	return 0;
}

/* The same, as a classic tracepoint: its record has no vCPU pointer, so
 * only slots userspace described can be resolved. */
SEC("tracepoint/kvm/kvm_dirty_ring_push")
int tracepoint_dirty_ring_push(struct trace_event_raw_kvm_dirty_ring_push *ctx)
{
	__u64 gfn;

	if (!ours())
		return 0;
	if (static_base(ctx->slot, ctx->offset, &gfn) == 0)
		record(gfn);
	else
		count(STAT_SLOT_UNKNOWN);
	return 0;
}

/* Write faults (dirty bitmap mode on hardware virtualisation): the first
 * write to a write-protected page after each harvest. */
SEC("tracepoint/kvm/kvm_page_fault")
int tracepoint_page_fault(struct trace_event_raw_kvm_page_fault *ctx)
{
	if (!(ctx->error_code & PFERR_WRITE_MASK) || !ours())
		return 0;
	record(ctx->fault_address >> 12);
	return 0;
}

/* Every page KVM marks dirty, ring or bitmap. */
SEC("fentry/mark_page_dirty_in_slot")
int BPF_PROG(fentry_mark_page_dirty, struct kvm *kvm, const struct kvm_memory_slot *memslot, __u64 gfn)
{
	if (!ours() || !memslot)
		return 0;
	record(gfn);
	return 0;
}

/* The ring indices (see rings), for any page hook: classic tracepoints,
 * whose records carry the ring's index and its indices after the push
 * or the reset. */
/* pushed only grows (mod 2^32): a ring's push and its reset may run at
 * once, on its vCPU's thread and on the resetting one. */
static __always_inline void raise_pushed(struct ring_index *r, __u64 v)
{
	int i;

	for (i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)&r->pushed;

		if ((__u32)(v - (__u32)old) >= 0x80000000U || v == (__u32)old)
			return;
		if (__sync_val_compare_and_swap(&r->pushed, old, v) == old)
			return;
	}
}

/* our_ring is the entry of the watched VM's ring idx, or NULL: another
 * process's, or a vCPU id past MAX_RINGS (counted: not followed). */
static __always_inline struct ring_index *our_ring(__u32 idx)
{
	struct ring_index *r;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return NULL;
	r = bpf_map_lookup_elem(&rings, &idx);
	if (!r)
		count(STAT_SLOT_UNKNOWN);
	return r;
}

SEC("tracepoint/kvm/kvm_dirty_ring_push")
int ring_push_index(struct trace_event_raw_kvm_dirty_ring_push *ctx)
{
	struct ring_index *r = our_ring(ctx->index);

	if (r)
		raise_pushed(r, ctx->dirty_index);
	return 0;
}

/* One reset ioctl at a time (QEMU holds its slots lock across it): seq
 * guards the reset fields, which only this program writes. */
SEC("tracepoint/kvm/kvm_dirty_ring_reset")
int ring_reset_index(struct trace_event_raw_kvm_dirty_ring_reset *ctx)
{
	struct ring_index *r = our_ring(ctx->index);

	if (!r)
		return 0;
	if (ctx->index == 0)
		__sync_fetch_and_add(&reset_gen, 1); /* vCPU 0's ring goes first: a new ioctl, the last one's flush done */
	__sync_fetch_and_add(&r->seq, 1);
	r->effective = r->pending;
	r->effective_gen = r->pending_gen;
	r->pending = ctx->reset_index;
	r->pending_gen = reset_gen;
	__sync_fetch_and_add(&r->seq, 1);
	raise_pushed(r, ctx->dirty_index); /* entries pushed before the programs came */
	return 0;
}

/* Does nothing: its run time per event is the floor any program on this
 * hook costs on this machine, which benchmarks subtract to show what
 * pagecast's own work costs. */
SEC("tp_btf/kvm_dirty_ring_push")
int BPF_PROG(tp_btf_floor)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
