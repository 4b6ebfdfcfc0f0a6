//go:build ignore

// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * pagecast-dirty: a QEMU TCG plugin that records which guest-physical pages
 * the guest writes, per epoch, into a shared-memory area that pagecast's
 * collector reads (package tcg; the layout is documented in doc.go).
 *
 * Per store: QEMU resolves the store's guest-physical address, the plugin
 * marks one byte of the current epoch's buffer. No syscall, no lock, no
 * shared atomic read-modify-write on that path.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pagecast-qemu-plugin.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Layout of the area; mirrored in layout.go. */
#define AREA_MAGIC 0x47544350u /* 'PCTG' */
#define AREA_VERSION 1u
#define HEADER_SIZE 4096u
#define SLOT_OFFSET 256u
#define SLOT_SIZE 64u
#define SLOTS ((HEADER_SIZE - SLOT_OFFSET) / SLOT_SIZE) /* 60 */
#define PAGE_SHIFT 12
#define DEFAULT_PAGES (1ull << (32 - PAGE_SHIFT)) /* 4 GiB of physical addresses */
#define MAX_PAGES (1ull << (48 - PAGE_SHIFT))

enum { STATE_INIT = 0, STATE_RUNNING = 1, STATE_EXITED = 2 };

struct header {
	uint32_t magic;
	uint32_t version;
	uint32_t api_min; /* QEMU's */
	uint32_t api_cur;
	uint64_t capacity; /* pages per buffer */
	uint32_t epoch;    /* written by the collector */
	uint32_t state;
	uint32_t pid;     /* QEMU's */
	uint32_t slots;   /* per-vCPU slots in the header */
	uint32_t plugin_api; /* the plugin's API version */
};

/* One vCPU's counters, alone on a cache line. vCPUs from SLOTS-1 on share
 * the last slot and add atomically. */
struct slot {
	uint64_t writes;       /* every store seen */
	uint64_t out_of_range; /* RAM stores at or past capacity, or unresolved */
	uint64_t io;           /* stores to MMIO */
	uint64_t pad[5];
} __attribute__((aligned(SLOT_SIZE)));

_Static_assert(sizeof(struct header) <= SLOT_OFFSET, "header overlaps the slots");
_Static_assert(sizeof(struct slot) == SLOT_SIZE, "slot is not one cache line");

/*
 * The API version the plugin declares. The functions it calls are the same
 * in QEMU 7.2's API version 1 and in the versions after it up to 10.x's, but
 * QEMU 9.0 and later refuse version 1: they raised their oldest version to
 * 2 when they removed the functions version 1 deprecated (qemu_plugin_n_vcpus
 * among them). QEMU reads this symbol after loading the plugin, so a
 * constructor sets it first from what the QEMU loading it exports (a weak
 * reference, bound at load): 2 where qemu_plugin_n_vcpus is gone, 1 where
 * it is there. A build with
 * -DPC_PLUGIN_API_VERSION=N declares N, whatever the QEMU.
 */
#ifdef PC_PLUGIN_API_VERSION
PC_EXPORT int qemu_plugin_version = PC_PLUGIN_API_VERSION;
#else
PC_EXPORT int qemu_plugin_version = 1;

/* Weak: resolved to NULL at load where the QEMU exports no such function. */
extern int qemu_plugin_n_vcpus(void) __attribute__((weak));

__attribute__((constructor)) static void choose_api_version(void)
{
	if (qemu_plugin_n_vcpus == NULL)
		qemu_plugin_version = 2;
}
#endif

static struct header *hdr;
static struct slot *slots;
static uint8_t *buffers[2];
static uint64_t capacity;
static char shm_path[4096];
static int shm_is_default;

static inline void count(struct slot *s, unsigned int vcpu)
{
	if (likely(vcpu < SLOTS - 1))
		__atomic_store_n(&s->writes, s->writes + 1, __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(&s->writes, 1, __ATOMIC_RELAXED);
}

static inline void bump(uint64_t *c, unsigned int vcpu)
{
	if (likely(vcpu < SLOTS - 1))
		__atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/*
 * Marks the page of vaddr; a store not to RAM, or past the capacity, is
 * counted instead, if tally (a store straddling two pages is one store,
 * counted by its first page: counted by both, it came off the RAM stores'
 * count twice).
 */
static inline void mark(struct slot *s, unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, int tally)
{
	struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);

	if (unlikely(hw == NULL)) {
		if (tally)
			bump(&s->out_of_range, vcpu);
		return;
	}
	if (unlikely(qemu_plugin_hwaddr_is_io(hw))) {
		if (tally)
			bump(&s->io, vcpu);
		return;
	}
	uint64_t pfn = qemu_plugin_hwaddr_phys_addr(hw) >> PAGE_SHIFT;
	if (unlikely(pfn >= capacity)) {
		if (tally)
			bump(&s->out_of_range, vcpu);
		return;
	}
	uint8_t *b = buffers[__atomic_load_n(&hdr->epoch, __ATOMIC_RELAXED) & 1] + pfn;
	if (!*b) /* test first: a page written again stays a clean cache line */
		*b = 1;
}

static void on_store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	(void)udata;
	struct slot *s = &slots[likely(vcpu < SLOTS - 1) ? vcpu : SLOTS - 1];

	count(s, vcpu);
	mark(s, vcpu, info, vaddr, 1);
	/* A store that straddles a page boundary dirties both pages. Only a
	 * store starting in a page's last 31 bytes can; size it then. */
	if (unlikely((vaddr & 0xfff) > 0xfe0)) {
		uint64_t last = vaddr + (1ull << qemu_plugin_mem_size_shift(info)) - 1;
		if ((last ^ vaddr) >> PAGE_SHIFT)
			mark(s, vcpu, info, last, 0);
	}
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id;
	size_t n = qemu_plugin_tb_n_insns(tb);

	for (size_t i = 0; i < n; i++)
		qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_store,
						 QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_W, NULL);
}

static void on_qemu_exit(qemu_plugin_id_t id, void *udata)
{
	(void)id;
	(void)udata;
	__atomic_store_n(&hdr->state, STATE_EXITED, __ATOMIC_RELEASE);
	if (shm_is_default)
		unlink(shm_path);
}

static int parse_args(int argc, char **argv)
{
	shm_path[0] = 0;
	capacity = DEFAULT_PAGES;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "shm=", 4) == 0) {
			size_t n = strlen(a + 4);
			if (n == 0 || n >= sizeof(shm_path)) {
				fprintf(stderr, "pagecast-dirty: shm= wants a path of 1 to %zu bytes\n",
					sizeof(shm_path) - 1);
				return -1;
			}
			memcpy(shm_path, a + 4, n + 1);
		} else if (strncmp(a, "pages=", 6) == 0) {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(a + 6, &end, 10);
			if (errno || end == a + 6 || *end || v == 0 || v > MAX_PAGES) {
				fprintf(stderr, "pagecast-dirty: pages=%s: want a page count from 1 to %llu\n",
					a + 6, (unsigned long long)MAX_PAGES);
				return -1;
			}
			capacity = v;
		} else {
			fprintf(stderr, "pagecast-dirty: unknown argument %s (want shm=PATH, pages=N)\n", a);
			return -1;
		}
	}
	if (!shm_path[0]) {
		snprintf(shm_path, sizeof(shm_path), "/dev/shm/pagecast-tcg.%d", (int)getpid());
		shm_is_default = 1;
	}
	return 0;
}

/*
 * program_is_qemu says whether process pid runs a QEMU, by the program it
 * was started as (its command line's first word: -name ...,process=NAME
 * renames QEMU's threads, not that); 0 for a kernel thread (no command
 * line) or one gone; 1 where neither that nor its executable can be read.
 */
static int program_is_qemu(uint32_t pid)
{
	char path[64], prog[4096];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%u/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, prog, sizeof(prog) - 1);
		close(fd);
	}
	if (n < 0) {
		snprintf(path, sizeof(path), "/proc/%u/exe", pid);
		n = readlink(path, prog, sizeof(prog) - 1);
		if (n < 0)
			return errno == ENOENT ? 0 : 1;
	}
	prog[n] = 0; /* the first word, NUL-terminated, or the executable */
	const char *base = strrchr(prog, '/');
	return strstr(base ? base + 1 : prog, "qemu") != NULL;
}

/*
 * area_in_use says whether the file open at fd is the area of another QEMU
 * that runs: two QEMUs given one shm= wrote into one file, and a profile
 * of either took both guests' pages. An area left by a QEMU that is gone
 * (killed before its atexit) is taken over, its pid too if another
 * program has it since. Held by another process (a reader, or a plugin
 * setting it up: the check and the setting up are under the lock) it is in
 * use.
 */
static int area_in_use(int fd)
{
	struct header h;

	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		fprintf(stderr, "pagecast-dirty: %s is held by another process (a QEMU setting it up, or pagecast reading it): "
				"give each QEMU a shm= of its own\n",
			shm_path);
		return 1;
	}
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != AREA_MAGIC ||
	    h.state != STATE_RUNNING || h.pid == 0 || h.pid > INT32_MAX || (pid_t)h.pid == getpid())
		return 0;
	if ((kill((pid_t)h.pid, 0) != 0 && errno == ESRCH) || !program_is_qemu(h.pid))
		return 0;
	fprintf(stderr, "pagecast-dirty: %s is the area of QEMU process %u, which runs: give each QEMU a shm= of its own\n",
		shm_path, h.pid);
	return 1;
}

PC_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	if (info->version.min > qemu_plugin_version || info->version.cur < qemu_plugin_version) {
		fprintf(stderr,
			"pagecast-dirty: plugin API version %d, but this QEMU loads API versions %d to %d: "
			"pagecast's plugin runs on QEMU 7.2 to 10.x\n",
			qemu_plugin_version, info->version.min, info->version.cur);
		return -1;
	}
	if (!info->system_emulation) {
		fprintf(stderr, "pagecast-dirty: needs system emulation (qemu-system-*), not user mode\n");
		return -1;
	}
	if (parse_args(argc, argv))
		return -1;

	size_t size = HEADER_SIZE + 2 * capacity;
	int fd = open(shm_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "pagecast-dirty: create %s: %s\n", shm_path, strerror(errno));
		return -1;
	}
	if (area_in_use(fd)) {
		close(fd);
		return -1; /* not ours to remove */
	}
	if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0) {
		fprintf(stderr, "pagecast-dirty: size %s to %zu bytes: %s\n", shm_path, size, strerror(errno));
		close(fd);
		unlink(shm_path);
		return -1;
	}
	void *area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (area == MAP_FAILED) {
		fprintf(stderr, "pagecast-dirty: map %s: %s\n", shm_path, strerror(errno));
		close(fd);
		unlink(shm_path);
		return -1;
	}

	hdr = area;
	slots = (struct slot *)((char *)area + SLOT_OFFSET);
	buffers[0] = (uint8_t *)area + HEADER_SIZE;
	buffers[1] = buffers[0] + capacity;
	hdr->version = AREA_VERSION;
	hdr->api_min = (uint32_t)info->version.min;
	hdr->api_cur = (uint32_t)info->version.cur;
	hdr->capacity = capacity;
	hdr->pid = (uint32_t)getpid();
	hdr->slots = SLOTS;
	hdr->plugin_api = (uint32_t)qemu_plugin_version;
	__atomic_store_n(&hdr->magic, AREA_MAGIC, __ATOMIC_RELEASE);
	__atomic_store_n(&hdr->state, STATE_RUNNING, __ATOMIC_RELEASE);
	/* The lock area_in_use took goes once the area says it runs (the
	 * mapping holds the file open: closing alone would keep it). */
	flock(fd, LOCK_UN);
	close(fd);

	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
	return 0;
}
