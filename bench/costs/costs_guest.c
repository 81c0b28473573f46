// SPDX-License-Identifier: GPL-2.0
/*
 * costs-guest: the guest side of the struct-page traffic benchmark (bench/costs.py). Each
 * command does one workload between two phase markers for the memmeter plugin (a store of
 * MAGIC << 32 | phase at MARK_VA; phase 0 between workloads) and prints one JSON line:
 * the pages it handled and the /proc/vmstat counters that moved during the phase.
 *
 *   costs-guest mark PHASE
 *   costs-guest kpageflags PHASE FIRST_PFN COUNT      read /proc/kpageflags for the pfns
 *   costs-guest churn PHASE NODE PAGES ROUNDS         mmap, mbind, touch, munmap
 *   costs-guest faults PHASE NODE PAGES ROUNDS        map a tmpfs file on NODE, read-fault it
 *   costs-guest migrate PHASE FROM TO PAGES ROUNDS    move_pages FROM -> TO -> FROM
 *   costs-guest migrate-all PHASE FROM TO PAGES       migrate_pages() of the process
 *   costs-guest compact PHASE NODE PAGES              fragment NODE, then compact it
 *   costs-guest reclaim PHASE NODE FILE PAGES         page cache of FILE on NODE, then
 *                                                     PAGES of anon memory there
 *   costs-guest offline-online PHASE BLOCK            memoryBLOCK offline, online_movable
 *   costs-guest poison-pfn 0 PFN                      hwpoison injector on PFN; its kpageflags
 *   costs-guest poison-data 0 NODE                    poison a page of ours on NODE, touch it
 *
 * No libnuma: the system calls by number. Built static on the host (bench/costs/build.sh).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MARK_VA 0x7e5700000000ULL
#define MAGIC 0x4d4d4554ULL
#define PAGE 4096UL
#define MPOL_BIND 2
#define MPOL_MF_MOVE (1 << 1)
#define MAX_VMSTAT 256

static volatile uint64_t *mark_page;

struct vmstat {
	int n;
	char name[MAX_VMSTAT][64];
	long long value[MAX_VMSTAT];
};

static struct vmstat before, after;

static void die(const char *what)
{
	fprintf(stderr, "costs-guest: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void mark(uint32_t phase)
{
	if (!mark_page) {
		void *p = mmap((void *)MARK_VA, PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p == MAP_FAILED || p != (void *)MARK_VA)
			die("mmap of the marker page");
		mark_page = p;
		*mark_page = 0; /* fault it in: the marker store itself must not fault */
	}
	*mark_page = MAGIC << 32 | phase;
}

static void read_vmstat(struct vmstat *v)
{
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		die("/proc/vmstat");
	v->n = 0;
	while (v->n < MAX_VMSTAT && fscanf(f, "%63s %lld", v->name[v->n], &v->value[v->n]) == 2)
		v->n++;
	fclose(f);
}

static void begin(uint32_t phase)
{
	read_vmstat(&before);
	mark(phase);
}

static void end(const char *workload, long long pages, const char *extra)
{
	mark(0);
	read_vmstat(&after);
	printf("{\"workload\": \"%s\", \"pages\": %lld%s%s, \"vmstat\": {", workload, pages,
	       extra ? ", " : "", extra ? extra : "");
	for (int i = 0, first = 1; i < after.n && i < before.n; i++) {
		long long d = after.value[i] - before.value[i];

		if (d && !strcmp(after.name[i], before.name[i])) {
			printf("%s\"%s\": %lld", first ? "" : ", ", after.name[i], d);
			first = 0;
		}
	}
	printf("}}\n");
}

static long mbind_node(void *addr, unsigned long len, int node)
{
	unsigned long mask = 1UL << node;

	return syscall(SYS_mbind, addr, len, MPOL_BIND, &mask, sizeof(mask) * 8, 0);
}

static long set_policy_node(int node)
{
	unsigned long mask = 1UL << node;

	return syscall(SYS_set_mempolicy, MPOL_BIND, &mask, sizeof(mask) * 8);
}

static char *map_on(int node, long pages)
{
	char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	/* 4 KiB pages only: a huge page would be one struct page for 512. */
	madvise(p, pages * PAGE, MADV_NOHUGEPAGE);
	if (mbind_node(p, pages * PAGE, node))
		die("mbind");
	return p;
}

static void touch(char *p, long pages)
{
	for (long i = 0; i < pages; i++)
		p[i * PAGE] = (char)i;
}

static int count_on(char *p, long pages, int node)
{
	int n = 0, status;

	for (long i = 0; i < pages; i++) {
		void *addr = p + i * PAGE;

		if (syscall(SYS_move_pages, 0, 1UL, &addr, NULL, &status, 0) == 0 && status == node)
			n++;
	}
	return n;
}

static int cmd_kpageflags(uint32_t phase, unsigned long long first, long count)
{
	int fd = open("/proc/kpageflags", O_RDONLY);
	uint64_t *buf = calloc(count, sizeof(uint64_t));
	ssize_t got;

	if (fd < 0 || !buf)
		die("/proc/kpageflags");
	begin(phase);
	got = pread(fd, buf, count * sizeof(uint64_t), first * sizeof(uint64_t));
	end("kpageflags", count, NULL);
	if (got != (ssize_t)(count * sizeof(uint64_t)))
		die("pread /proc/kpageflags");
	return 0;
}

static int cmd_churn(uint32_t phase, int node, long pages, long rounds)
{
	int on = 0;

	begin(phase);
	for (long r = 0; r < rounds; r++) {
		char *p = map_on(node, pages);

		touch(p, pages);
		munmap(p, pages * PAGE);
	}
	end("churn", pages * rounds, NULL);
	/* Where the pages went, outside the phase. */
	{
		char *p = map_on(node, pages);

		touch(p, pages);
		on = count_on(p, pages, node);
		munmap(p, pages * PAGE);
	}
	fprintf(stderr, "churn: %d of %ld pages on node %d\n", on, pages, node);
	return on == pages ? 0 : 1;
}

static int cmd_faults(uint32_t phase, int node, long pages, long rounds)
{
	int fd = memfd_create("costs-faults", 0);
	char *p;
	volatile char sink = 0;

	if (fd < 0 || ftruncate(fd, pages * PAGE))
		die("memfd");
	/* Populate the file's pages on node (shmem follows the mapping's policy). */
	p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap memfd");
	madvise(p, pages * PAGE, MADV_NOHUGEPAGE);
	if (mbind_node(p, pages * PAGE, node))
		die("mbind memfd");
	touch(p, pages);
	munmap(p, pages * PAGE);
	begin(phase);
	for (long r = 0; r < rounds; r++) {
		p = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap memfd");
		for (long i = 0; i < pages; i++)
			sink += p[i * PAGE];
		munmap(p, pages * PAGE);
	}
	end("faults", pages * rounds, NULL);
	p = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	for (long i = 0; i < pages; i++)
		sink += p[i * PAGE];
	fprintf(stderr, "faults: %d of %ld pages on node %d\n", count_on(p, pages, node), pages,
		node);
	return 0;
}

static int move_all(char *p, long pages, int node)
{
	void **addrs = calloc(pages, sizeof(void *));
	int *nodes = calloc(pages, sizeof(int)), *status = calloc(pages, sizeof(int)), moved = 0;

	if (!addrs || !nodes || !status)
		die("calloc");
	for (long i = 0; i < pages; i++) {
		addrs[i] = p + i * PAGE;
		nodes[i] = node;
	}
	if (syscall(SYS_move_pages, 0, (unsigned long)pages, addrs, nodes, status, MPOL_MF_MOVE))
		die("move_pages");
	for (long i = 0; i < pages; i++)
		moved += status[i] == node;
	free(addrs);
	free(nodes);
	free(status);
	return moved;
}

static int cmd_migrate(uint32_t phase, int from, int to, long pages, long rounds)
{
	char *p = map_on(from, pages);
	int there = 0, back = 0;
	char extra[96];

	touch(p, pages);
	/* The policy must not undo the moves: let the pages be anywhere. */
	syscall(SYS_mbind, p, pages * PAGE, 0 /* MPOL_DEFAULT */, NULL, 0, 0);
	begin(phase);
	for (long r = 0; r < rounds; r++) {
		there += move_all(p, pages, to);
		back += move_all(p, pages, from);
	}
	/* A page that move_pages() could not isolate (busy) is not a page handled. */
	snprintf(extra, sizeof(extra), "\"asked\": %ld", 2 * pages * rounds);
	end("migrate", there + back, extra);
	return there + back > 0 ? 0 : 1;
}

static int cmd_migrate_all(uint32_t phase, int from, int to, long pages)
{
	char *p = map_on(from, pages);
	unsigned long old = 1UL << from, new = 1UL << to;
	long left;
	char extra[64];

	touch(p, pages);
	syscall(SYS_mbind, p, pages * PAGE, 0, NULL, 0, 0);
	begin(phase);
	left = syscall(SYS_migrate_pages, 0, sizeof(old) * 8, &old, &new);
	left += syscall(SYS_migrate_pages, 0, sizeof(old) * 8, &new, &old);
	snprintf(extra, sizeof(extra), "\"not_moved\": %ld", left);
	end("migrate-all", 2 * pages, extra);
	return 0;
}

static long node_present_pages(int node)
{
	char path[96], line[256];
	long long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", node);
	f = fopen(path, "r");
	if (!f)
		die(path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Node %*d MemTotal: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? 0 : (long)(kb / 4);
}

static int cmd_compact(uint32_t phase, int node, long pages)
{
	char *p = map_on(node, pages);
	char path[96];
	int fd;

	touch(p, pages);
	/* Free every other page: the node's free memory in 4 KiB holes. */
	for (long i = 0; i < pages; i += 2)
		madvise(p + i * PAGE, PAGE, MADV_DONTNEED);
	syscall(SYS_mbind, p, pages * PAGE, 0, NULL, 0, 0);
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/compact", node);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		die(path);
	begin(phase);
	if (write(fd, "1", 1) != 1)
		die("compact");
	/* Compaction scans the whole node: a page handled is a page of the node. */
	end("compact", node_present_pages(node), NULL);
	close(fd);
	return 0;
}

static int cmd_reclaim(uint32_t phase, int node, const char *file, long pages)
{
	int fd = open(file, O_RDONLY);
	static char buf[1 << 20];
	char *p;

	if (fd < 0)
		die(file);
	if (set_policy_node(node))
		die("set_mempolicy");
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	p = map_on(node, pages);
	begin(phase);
	touch(p, pages);
	end("reclaim", pages, NULL);
	munmap(p, pages * PAGE);
	return 0;
}

static int write_state(long block, const char *state)
{
	char path[96];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/devices/system/memory/memory%ld/state", block);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		die(path);
	n = write(fd, state, strlen(state));
	close(fd);
	return n == (ssize_t)strlen(state) ? 0 : -1;
}

static int cmd_offline_online(uint32_t phase, long block)
{
	FILE *f = fopen("/sys/devices/system/memory/block_size_bytes", "r");
	unsigned long long size = 0;
	int off, on;

	if (!f || fscanf(f, "%llx", &size) != 1)
		die("block_size_bytes");
	fclose(f);

	begin(phase);
	off = write_state(block, "offline");
	on = write_state(block, "online_movable");
	end("offline-online", 2 * (long long)(size / PAGE), NULL);
	if (off || on)
		fprintf(stderr, "offline-online: memory%ld: %s\n", block, strerror(errno));
	return off || on;
}

#define KPF_HWPOISON 19
#define CORRUPT_PFN "/sys/kernel/debug/hwpoison/corrupt-pfn"

static uint64_t kpageflags_of(unsigned long long pfn)
{
	int fd = open("/proc/kpageflags", O_RDONLY);
	uint64_t flags = 0;

	if (fd < 0 || pread(fd, &flags, sizeof(flags), pfn * sizeof(flags)) != sizeof(flags))
		flags = UINT64_MAX;
	if (fd >= 0)
		close(fd);
	return flags;
}

/* The injector's answer: 0, or the errno of the write. */
static int inject(unsigned long long pfn)
{
	char buf[32];
	int fd = open(CORRUPT_PFN, O_WRONLY), n, err = 0;

	if (fd < 0)
		return errno;
	n = snprintf(buf, sizeof(buf), "%#llx\n", pfn);
	if (write(fd, buf, n) != n)
		err = errno;
	close(fd);
	return err;
}

static int cmd_poison_pfn(unsigned long long pfn)
{
	uint64_t before = kpageflags_of(pfn), after;
	int err = inject(pfn);

	after = kpageflags_of(pfn);
	printf("{\"pfn\": %llu, \"inject_errno\": %d, \"inject_error\": \"%s\", "
	       "\"kpageflags_before\": %llu, \"kpageflags_after\": %llu, \"hwpoison\": %d}\n",
	       pfn, err, err ? strerror(err) : "", (unsigned long long)before,
	       (unsigned long long)after, after != UINT64_MAX && (after >> KPF_HWPOISON & 1));
	return 0;
}

static sigjmp_buf bus_jump;
static volatile int bus_code;

static void on_sigbus(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)ctx;
	bus_code = info->si_code;
	siglongjmp(bus_jump, 1);
}

static unsigned long long pfn_of(void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t entry = 0;

	if (fd < 0 || pread(fd, &entry, sizeof(entry), (uintptr_t)addr / PAGE * sizeof(entry)) !=
			      sizeof(entry))
		die("/proc/self/pagemap");
	close(fd);
	return entry >> 63 & 1 ? entry & ((1ULL << 55) - 1) : 0;
}

static int cmd_poison_data(int node)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	char *p = map_on(node, 1);
	volatile char sink;
	unsigned long long pfn;
	int err, got_bus = 0, on;

	touch(p, 1);
	pfn = pfn_of(p);
	on = count_on(p, 1, node);
	sigaction(SIGBUS, &sa, NULL);
	err = inject(pfn);
	if (sigsetjmp(bus_jump, 1) == 0)
		sink = p[0]; /* a hwpoisoned page: SIGBUS (BUS_MCEERR_AR) on this access */
	else
		got_bus = 1;
	(void)sink;
	printf("{\"pfn\": %llu, \"on_node\": %d, \"inject_errno\": %d, \"sigbus\": %d, "
	       "\"si_code\": %d, \"bus_mceerr_ar\": %d, \"hwpoison\": %d}\n",
	       pfn, on ? node : -1, err, got_bus, got_bus ? bus_code : 0,
	       got_bus && bus_code == BUS_MCEERR_AR,
	       (int)(kpageflags_of(pfn) >> KPF_HWPOISON & 1));
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t phase;

	if (argc < 3) {
		fprintf(stderr, "usage: costs-guest COMMAND PHASE ARGS...\n");
		return 2;
	}
	phase = (uint32_t)strtoul(argv[2], NULL, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "mark")) {
		mark(phase);
		return 0;
	}
	if (!strcmp(argv[1], "kpageflags") && argc == 5)
		return cmd_kpageflags(phase, strtoull(argv[3], NULL, 0), atol(argv[4]));
	if (!strcmp(argv[1], "churn") && argc == 6)
		return cmd_churn(phase, atoi(argv[3]), atol(argv[4]), atol(argv[5]));
	if (!strcmp(argv[1], "faults") && argc == 6)
		return cmd_faults(phase, atoi(argv[3]), atol(argv[4]), atol(argv[5]));
	if (!strcmp(argv[1], "migrate") && argc == 7)
		return cmd_migrate(phase, atoi(argv[3]), atoi(argv[4]), atol(argv[5]), atol(argv[6]));
	if (!strcmp(argv[1], "migrate-all") && argc == 6)
		return cmd_migrate_all(phase, atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
	if (!strcmp(argv[1], "compact") && argc == 5)
		return cmd_compact(phase, atoi(argv[3]), atol(argv[4]));
	if (!strcmp(argv[1], "reclaim") && argc == 6)
		return cmd_reclaim(phase, atoi(argv[3]), argv[4], atol(argv[5]));
	if (!strcmp(argv[1], "poison-pfn") && argc == 4)
		return cmd_poison_pfn(strtoull(argv[3], NULL, 0));
	if (!strcmp(argv[1], "poison-data") && argc == 4)
		return cmd_poison_data(atoi(argv[3]));
	if (!strcmp(argv[1], "offline-online") && argc == 4)
		return cmd_offline_online(phase, atol(argv[3]));
	fprintf(stderr, "costs-guest: unknown command or arguments: %s\n", argv[1]);
	return 2;
}
