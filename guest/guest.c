//go:build ignore

/*
 * The pagecast test guest: a freestanding 32-bit program that dirties guest
 * memory in named patterns so that pagecast has something real to watch,
 * predict and migrate. See doc.go for the memory layout, the status page and
 * the command line; entry.S for how CPUs arrive here. The go:build line keeps
 * the Go tool, which would take this for cgo source, away from it.
 */
#include <stddef.h>
#include <stdint.h>

#define VERSION      1
#define BOOT_MAGIC   0x2BADB002u /* EAX of the boot CPU (multiboot) */
#define AP_MAGIC     0x50434150u /* EAX of additional vCPUs ('PCAP') */
#define STATUS_MAGIC 0x54534350u /* 'PCST' */
#define MAX_CPUS     16
#define PAGE_SHIFT   12
#define PAGE_SIZE    (1u << PAGE_SHIFT)
#define ARENA_FIRST  1024u       /* first arena page: 4 MiB */
#define MIN_TOP      2048u       /* memory must reach 8 MiB */
#define MAX_TOP      (1u << 20)  /* 4 GiB: all that 32-bit addresses reach */
#define REPLAY_TABLE ((const uint32_t *)0x200000)
#define REPLAY_MAX   524288u
#define COM1         0x3F8

enum state { BOOTING, WAITING, RUNNING, DONE, FAILED };
enum workload { IDLE, HOTSET, UNIFORM, SWEEP, ZIPF, PHASED, STREAM, REPLAY, WORKLOADS };
enum error { ERR_NONE, ERR_BOOT, ERR_MEMORY, ERR_CMDLINE, ERR_REPLAY };

static const char *const workload_names[WORKLOADS] = {
	"idle", "hotset", "uniform", "sweep", "zipf", "phased", "stream", "replay",
};

struct cpu_status {
	uint32_t progress_lo, progress_hi; /* writes completed by this CPU */
	uint32_t state;
	uint32_t reserved;
};

/* The status page the host reads; layout mirrored in status.go. */
struct status {
	uint32_t magic, version, state;
	uint32_t go; /* written by the host */
	uint32_t workload, cpus, arena_first, arena_pages, error;
	uint32_t replay_count; /* written by the host */
	uint32_t reserved[6];
	struct cpu_status cpu[MAX_CPUS];
};
_Static_assert(offsetof(struct status, replay_count) == 36, "status layout");
_Static_assert(offsetof(struct status, cpu) == 64, "status layout");
_Static_assert(sizeof(struct status) <= PAGE_SIZE, "status fits a page");

volatile struct status pc_status __attribute__((section(".status"), aligned(PAGE_SIZE)));

struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};
#define MB_MEMORY  (1u << 0)
#define MB_CMDLINE (1u << 2)

/* Parameters, set by the boot CPU before it leaves state BOOTING. */
static struct {
	uint32_t workload, cpus, write_page, delay, gate, seed, hot, p, period, loops;
	uint32_t arena_pages, replay_count;
} prm;

static volatile uint32_t finished_cpus;

void halt(void) __attribute__((noreturn)); /* entry.S */
void guest_main(uint32_t magic, const struct multiboot_info *mbi, uint32_t cpu)
	__attribute__((noreturn));

static inline void barrier(void) { asm volatile("" ::: "memory"); }
static inline void pause(void) { asm volatile("pause" ::: "memory"); }

static inline void outb(uint16_t port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Serial output. Every port access is a VM exit: print rarely. */

static void put_char(char c)
{
	for (int i = 0; i < 1000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, c);
}

static void put_str(const char *s)
{
	while (*s)
		put_char(*s++);
}

static void put_uint(uint32_t v)
{
	char buf[10];
	int n = 0;
	do {
		buf[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (n)
		put_char(buf[--n]);
}

static void put_kv(const char *key, uint32_t v)
{
	put_char(' ');
	put_str(key);
	put_char('=');
	put_uint(v);
}

static void set_state(uint32_t s)
{
	barrier(); /* parameters are written before the state that publishes them */
	pc_status.state = s;
}

/* A word of the command line: s[0..n). */
struct word {
	const char *s;
	uint32_t n;
};

static void __attribute__((noreturn)) fail(uint32_t code, const char *msg, struct word w)
{
	put_str("pagecast-guest error: ");
	put_str(msg);
	if (w.n) {
		put_str(" \"");
		for (uint32_t i = 0; i < w.n; i++)
			put_char(w.s[i]);
		put_char('"');
	}
	put_char('\n');
	pc_status.error = code;
	set_state(FAILED);
	halt();
}

static const struct word no_word;

static int word_is(struct word w, const char *lit)
{
	uint32_t i;
	for (i = 0; i < w.n; i++)
		if (lit[i] != w.s[i])
			return 0;
	return lit[i] == '\0';
}

static int parse_uint(struct word w, uint32_t *out)
{
	uint32_t v = 0;
	if (w.n == 0)
		return 0;
	for (uint32_t i = 0; i < w.n; i++) {
		uint32_t d = (uint32_t)(w.s[i] - '0');
		if (d > 9 || v > (0xFFFFFFFFu - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	*out = v;
	return 1;
}

static const struct {
	const char *key;
	uint32_t *val;
	uint32_t min, max;
} numeric_keys[] = {
	{"cpus", &prm.cpus, 1, MAX_CPUS},
	{"delay", &prm.delay, 0, 0xFFFFFFFFu},
	{"gate", &prm.gate, 0, 1},
	{"seed", &prm.seed, 0, 0xFFFFFFFFu},
	{"hot", &prm.hot, 1, 0xFFFFFFFFu},
	{"p", &prm.p, 0, 65536},
	{"period", &prm.period, 1, 0xFFFFFFFFu},
	{"loops", &prm.loops, 0, 0xFFFFFFFFu},
};

/* Sets one key=value pair; fails the boot on anything unknown. */
static void set_param(struct word arg, struct word key, struct word val, int *loops_given)
{
	if (word_is(key, "workload")) {
		for (uint32_t i = 0; i < WORKLOADS; i++)
			if (word_is(val, workload_names[i])) {
				prm.workload = i;
				return;
			}
		fail(ERR_CMDLINE, "unknown workload in", arg);
	}
	if (word_is(key, "write")) {
		if (word_is(val, "word") || word_is(val, "page")) {
			prm.write_page = word_is(val, "page");
			return;
		}
		fail(ERR_CMDLINE, "bad value in", arg);
	}
	for (uint32_t i = 0; i < sizeof numeric_keys / sizeof numeric_keys[0]; i++) {
		if (!word_is(key, numeric_keys[i].key))
			continue;
		uint32_t v;
		if (!parse_uint(val, &v) || v < numeric_keys[i].min || v > numeric_keys[i].max)
			fail(ERR_CMDLINE, "bad value in", arg);
		*numeric_keys[i].val = v;
		if (numeric_keys[i].val == &prm.loops)
			*loops_given = 1;
		return;
	}
	fail(ERR_CMDLINE, "unknown parameter in", arg);
}

/*
 * Parses "key=value key=value ...". A leading word without '=' is the image
 * name that GRUB and QEMU put first, and is skipped.
 */
static void parse_cmdline(const char *s)
{
	int workload_given = 0, loops_given = 0, first = 1;

	prm.workload = IDLE;
	prm.cpus = 1;
	prm.seed = 1;
	prm.hot = 1024;
	prm.p = 58982; /* 0.9 */
	prm.period = 100000;

	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			break;
		struct word arg = {s, 0}, key, val;
		while (s[arg.n] != '\0' && s[arg.n] != ' ')
			arg.n++;
		s += arg.n;
		key = arg;
		for (key.n = 0; key.n < arg.n && arg.s[key.n] != '='; key.n++)
			;
		if (key.n == arg.n) {
			if (first) {
				first = 0;
				continue;
			}
			fail(ERR_CMDLINE, "want key=value, got", arg);
		}
		first = 0;
		val.s = arg.s + key.n + 1;
		val.n = arg.n - key.n - 1;
		if (word_is(key, "workload"))
			workload_given = 1;
		set_param(arg, key, val, &loops_given);
	}
	if (!workload_given)
		fail(ERR_CMDLINE, "missing workload=NAME", no_word);
	if (!loops_given)
		prm.loops = prm.workload == STREAM ? 1 : 0;
}

static void print_banner(void)
{
	put_str("pagecast-guest v");
	put_uint(VERSION);
	put_str(" workload=");
	put_str(workload_names[prm.workload]);
	put_kv("cpus", prm.cpus);
	put_str(prm.write_page ? " write=page" : " write=word");
	put_kv("delay", prm.delay);
	put_kv("gate", prm.gate);
	switch (prm.workload) {
	case PHASED:
		put_kv("period", prm.period);
		/* fall through */
	case HOTSET:
		put_kv("hot", prm.hot);
		put_kv("p", prm.p);
		/* fall through */
	case UNIFORM:
	case ZIPF:
		put_kv("seed", prm.seed);
		break;
	case STREAM:
	case REPLAY:
		put_kv("loops", prm.loops);
		break;
	}
	put_kv("arena", ARENA_FIRST);
	put_char('+');
	put_uint(prm.arena_pages);
	put_str(" pages\n");
}

/* One CPU's side of a workload. */
struct worker {
	volatile struct cpu_status *st;
	uint32_t index;      /* this CPU */
	uint32_t writes;     /* low half of the progress counter */
	uint32_t offset;     /* byte offset of the next word write */
	uint32_t rng;        /* xorshift32 state, never 0 */
	int whole_page;      /* a constant in each copy of the loops, see run() */
	uint32_t delay;      /* copies of parameters, kept in registers */
	uint32_t pages;
	uint32_t cpus;
};

static inline uint32_t next_random(struct worker *w)
{
	uint32_t x = w->rng;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return w->rng = x;
}

/* A random number in [0, n), by a 32x32->64 multiply (no division). */
static inline uint32_t random_below(struct worker *w, uint32_t n)
{
	return (uint32_t)(((uint64_t)next_random(w) * n) >> 32);
}

/* Dirties arena page number page (0-based) and counts the write. */
static inline __attribute__((always_inline)) void write_page(struct worker *w, uint32_t page)
{
	uint32_t *p = (uint32_t *)((ARENA_FIRST + page) << PAGE_SHIFT);
	uint32_t v = ++w->writes;

	if (w->whole_page) {
		uint32_t n = PAGE_SIZE / 4;
		asm volatile("rep stosl" : "+D"(p), "+c"(n) : "a"(v) : "memory");
	} else {
		*(volatile uint32_t *)((char *)p + w->offset) = v;
		/* 65 words on per write: 1024 writes use every offset once */
		w->offset = (w->offset + 65 * 4) & (PAGE_SIZE - 4);
	}
	w->st->progress_lo = v;
	if (v == 0)
		w->st->progress_hi++;
	for (uint32_t i = w->delay; i; i--)
		barrier();
}

/*
 * hotset and phased: with probability p a write hits the hot set of prm.hot
 * pages starting at base, else one of the other pages. phased moves base on
 * by the hot set's size every period writes (of this CPU); hotset passes
 * period 0 and keeps the hot set at the start of the arena.
 */
static inline __attribute__((always_inline)) void run_hotset(struct worker *w, uint32_t period)
{
	uint32_t pages = w->pages, hot = prm.hot, cold = pages - hot, p = prm.p;
	uint32_t base = 0, n = 0;

	for (;;) {
		uint32_t page;
		if ((next_random(w) & 0xFFFF) < p || cold == 0)
			page = random_below(w, hot);
		else
			page = hot + random_below(w, cold);
		page += base;
		if (page >= pages)
			page -= pages;
		write_page(w, page);
		if (period && ++n == period) {
			n = 0;
			base += hot;
			if (base >= pages)
				base -= pages;
		}
	}
}

static inline __attribute__((always_inline)) void run_uniform(struct worker *w)
{
	for (;;)
		write_page(w, random_below(w, w->pages));
}

/*
 * zipf: log-uniform by octave. Pick an octave j uniformly, then x uniformly
 * in [2^j, 2^(j+1)) and write page x-1; draws past the arena are redrawn.
 * Each octave gets the same share of writes, so the density is ~1/x:
 * Zipf with s ~ 1, the hottest pages at the start of the arena.
 */
static inline __attribute__((always_inline)) void run_zipf(struct worker *w)
{
	uint32_t pages = w->pages;
	uint32_t octaves = 32 - (uint32_t)__builtin_clz(pages);

	for (;;) {
		uint32_t x;
		do {
			uint32_t j = random_below(w, octaves);
			x = (1u << j) | (next_random(w) & ((1u << j) - 1));
		} while (x > pages);
		write_page(w, x - 1);
	}
}

/* sweep (loops 0) and stream: this CPU's stride of the arena, in order. */
static inline __attribute__((always_inline)) void run_sequential(struct worker *w, uint32_t loops)
{
	for (uint32_t pass = 0; loops == 0 || pass < loops; pass++)
		for (uint32_t page = w->index; page < w->pages; page += w->cpus)
			write_page(w, page);
}

/* replay: this CPU's stride of the table; pages outside the arena are skipped. */
static inline __attribute__((always_inline)) void run_replay(struct worker *w)
{
	uint32_t count = prm.replay_count, loops = prm.loops;

	for (uint32_t pass = 0; loops == 0 || pass < loops; pass++) {
		int wrote = 0;
		for (uint32_t i = w->index; i < count; i += w->cpus) {
			uint32_t page = REPLAY_TABLE[i] - ARENA_FIRST;
			if (page < w->pages) {
				write_page(w, page);
				wrote = 1;
			}
		}
		if (!wrote)
			return; /* nothing of ours to replay */
	}
}

static inline __attribute__((always_inline)) void run_workload(struct worker *w)
{
	switch (prm.workload) {
	case IDLE:
		halt();
	case HOTSET:
		run_hotset(w, 0);
		break;
	case PHASED:
		run_hotset(w, prm.period);
		break;
	case UNIFORM:
		run_uniform(w);
		break;
	case ZIPF:
		run_zipf(w);
		break;
	case SWEEP:
		run_sequential(w, 0);
		break;
	case STREAM:
		run_sequential(w, prm.loops);
		break;
	case REPLAY:
		run_replay(w);
		break;
	}
}

static void __attribute__((noreturn)) run(uint32_t cpu)
{
	/* a per-CPU seed: murmur3's finaliser over seed and cpu */
	uint32_t x = prm.seed ^ (0x9E3779B9u * (cpu + 1));
	x ^= x >> 16;
	x *= 0x85EBCA6Bu;
	x ^= x >> 13;
	x *= 0xC2B2AE35u;
	x ^= x >> 16;

	struct worker w = {
		.st = &pc_status.cpu[cpu],
		.index = cpu,
		.rng = x ? x : 1,
		.delay = prm.delay,
		.pages = prm.arena_pages,
		.cpus = prm.cpus,
	};
	w.st->state = RUNNING;

	/* One copy of the loops per write mode keeps that test out of them. */
	if (prm.write_page) {
		w.whole_page = 1;
		run_workload(&w);
	} else {
		w.whole_page = 0;
		run_workload(&w);
	}

	w.st->state = DONE;
	if (__atomic_add_fetch(&finished_cpus, 1, __ATOMIC_SEQ_CST) == prm.cpus) {
		set_state(DONE);
		put_str("pagecast-guest done\n");
	}
	halt();
}

static void init_status(void)
{
	pc_status.version = VERSION;
	pc_status.state = BOOTING;
	pc_status.workload = 0;
	pc_status.cpus = 0;
	pc_status.arena_first = 0;
	pc_status.arena_pages = 0;
	pc_status.error = ERR_NONE;
	for (int i = 0; i < MAX_CPUS; i++) {
		pc_status.cpu[i].progress_lo = 0;
		pc_status.cpu[i].progress_hi = 0;
		pc_status.cpu[i].state = BOOTING;
		pc_status.cpu[i].reserved = 0;
	}
	pc_status.magic = STATUS_MAGIC;
}

static void __attribute__((noreturn)) boot(uint32_t magic, const struct multiboot_info *mbi)
{
	init_status();
	if (magic != BOOT_MAGIC)
		fail(ERR_BOOT, "not started by a multiboot loader", no_word);
	if (!(mbi->flags & MB_MEMORY))
		fail(ERR_MEMORY, "no memory size from the loader", no_word);
	uint32_t top = 256 + mbi->mem_upper / 4; /* pages: 1 MiB + mem_upper KiB */
	if (top < MIN_TOP)
		fail(ERR_MEMORY, "need at least 8 MiB of memory", no_word);
	if (top > MAX_TOP)
		top = MAX_TOP;
	prm.arena_pages = top - ARENA_FIRST;
	pc_status.arena_first = ARENA_FIRST;
	pc_status.arena_pages = prm.arena_pages;

	if (!(mbi->flags & MB_CMDLINE))
		fail(ERR_CMDLINE, "no command line (want workload=NAME ...)", no_word);
	parse_cmdline((const char *)mbi->cmdline);
	if (prm.hot > prm.arena_pages)
		prm.hot = prm.arena_pages;
	pc_status.workload = prm.workload;
	pc_status.cpus = prm.cpus;
	print_banner();

	if (prm.gate) {
		set_state(WAITING);
		while (!pc_status.go)
			pause();
	}
	if (prm.workload == REPLAY) {
		prm.replay_count = pc_status.replay_count;
		if (prm.replay_count == 0)
			fail(ERR_REPLAY, "replay table is empty", no_word);
		if (prm.replay_count > REPLAY_MAX)
			fail(ERR_REPLAY, "replay count above 524288", no_word);
	}
	set_state(RUNNING);
	run(0);
}

/* Additional vCPUs wait for the boot CPU to publish the parameters. */
static void __attribute__((noreturn)) run_ap(uint32_t cpu)
{
	uint32_t s;
	while ((s = pc_status.state) == BOOTING || s == WAITING)
		pause();
	barrier();
	if (s != RUNNING || cpu >= prm.cpus)
		halt();
	run(cpu);
}

void guest_main(uint32_t magic, const struct multiboot_info *mbi, uint32_t cpu)
{
	if (magic == AP_MAGIC)
		run_ap(cpu);
	boot(magic, mbi);
}
