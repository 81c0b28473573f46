// SPDX-License-Identifier: GPL-2.0
/*
 * memmeter: a QEMU TCG plugin that counts guest loads and stores whose guest-physical
 * address falls in given ranges (the memmap of hot-plugged memory blocks), per range and
 * per workload phase, and feeds every guest data access through a last-level-cache model
 * to count those that would reach memory.
 *
 *   -plugin file=memmeter.so,ranges=FILE,out=FILE[,llc=BYTES][,ways=N]
 *
 * Phases: the guest stores the 8-byte value (MEMMETER_MAGIC << 32 | phase) at the virtual
 * address MEMMETER_MARK_VA (a page the guest program maps there; no kernel or other
 * program uses that address). Every marker closes the current phase (one JSON line to
 * out) and opens the next; phase MEMMETER_RELOAD re-reads the ranges file first (the guest
 * writes it, through the 9p share, once it knows where the memmap is).
 *
 * Ranges file: one range a line, "label start end" with start and end guest-physical
 * byte addresses in hex, [start, end). At most MAX_RANGES.
 *
 * Per phase and range: loads, stores, the accesses the cache model missed (loads and
 * stores), the 64-byte lines touched (distinct), and those lines as [offset, length] runs
 * (line offsets from the range's start; omitted past MAX_RUNS runs). Per phase: guest
 * instructions executed, all data accesses, all modelled misses.
 *
 * Cache model: physically indexed, 64-byte lines, `ways`-way set associative, true LRU,
 * write-allocate, one level, shared by all vCPUs (a mutex); instruction fetches are not
 * plugin memory accesses and are not modelled. Page-table walks by the MMU are not guest
 * loads either and are not counted (state this with the numbers).
 *
 * Built with -DMEMMETER_MUTANT: the range end bound is off by one line (the last 64 bytes
 * of every range are not counted), for the self-check's test of itself.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MEMMETER_MARK_VA 0x7e5700000000ULL
#define MEMMETER_MAGIC 0x4d4d4554ULL /* "MMET" */
#define MEMMETER_RELOAD 0xffffffffU
#define MAX_RANGES 256
#define MAX_RUNS 20000
#define LINE_SHIFT 6

#ifdef MEMMETER_MUTANT
#define END_SLACK ((uint64_t)1 << LINE_SHIFT)
#else
#define END_SLACK ((uint64_t)0)
#endif

struct range {
	char label[64];
	uint64_t start, end;
	uint64_t loads, stores, load_misses, store_misses;
	uint64_t *touched; /* bitmap of lines */
	uint64_t nlines;
};

static struct range ranges[MAX_RANGES];
static int nranges;
static uint64_t lo_bound = UINT64_MAX, hi_bound;
static char *ranges_path, *out_path;
static FILE *out;
static GMutex lock;

static uint64_t phase, phase_seq;
static uint64_t accesses, misses;
static struct qemu_plugin_scoreboard *insn_board;

/* The cache model. */
static uint64_t llc_bytes = 32ULL << 20, llc_ways = 16, llc_sets;
static uint64_t *llc_tags; /* sets * ways, tag + 1 (0: empty) */
static uint64_t *llc_age;  /* sets * ways, last use */
static uint64_t llc_clock;

static bool llc_access(uint64_t line)
{
	uint64_t set = line % llc_sets, tag = line + 1;
	uint64_t *tags = llc_tags + set * llc_ways, *age = llc_age + set * llc_ways;
	uint64_t victim = 0, oldest = UINT64_MAX;

	llc_clock++;
	for (uint64_t w = 0; w < llc_ways; w++) {
		if (tags[w] == tag) {
			age[w] = llc_clock;
			return true;
		}
		if (age[w] < oldest) {
			oldest = age[w];
			victim = w;
		}
	}
	tags[victim] = tag;
	age[victim] = llc_clock;
	return false;
}

static void free_ranges(void)
{
	for (int i = 0; i < nranges; i++)
		free(ranges[i].touched);
	nranges = 0;
	lo_bound = UINT64_MAX;
	hi_bound = 0;
}

static void load_ranges(void)
{
	FILE *f;
	char label[64];
	uint64_t start, end;

	free_ranges();
	if (!ranges_path)
		return;
	f = fopen(ranges_path, "r");
	if (!f) {
		fprintf(stderr, "memmeter: cannot open %s\n", ranges_path);
		return;
	}
	while (nranges < MAX_RANGES &&
	       fscanf(f, "%63s %" SCNx64 " %" SCNx64, label, &start, &end) == 3) {
		struct range *r = &ranges[nranges];

		if (end <= start)
			continue;
		memset(r, 0, sizeof(*r));
		snprintf(r->label, sizeof(r->label), "%s", label);
		r->start = start;
		r->end = end - END_SLACK;
		r->nlines = ((end - start) + (1 << LINE_SHIFT) - 1) >> LINE_SHIFT;
		r->touched = calloc((r->nlines + 63) / 64, sizeof(uint64_t));
		if (!r->touched)
			break;
		if (start < lo_bound)
			lo_bound = start;
		if (end > hi_bound)
			hi_bound = end;
		nranges++;
	}
	fclose(f);
}

static void emit_phase(void)
{
	if (!out)
		return;
	uint64_t insns = qemu_plugin_u64_sum(qemu_plugin_scoreboard_u64(insn_board));

	fprintf(out,
		"{\"seq\": %" PRIu64 ", \"phase\": %" PRIu64 ", \"insns\": %" PRIu64
		", \"accesses\": %" PRIu64 ", \"misses\": %" PRIu64 ", \"ranges\": [",
		phase_seq, phase, insns, accesses, misses);
	for (int i = 0; i < nranges; i++) {
		struct range *r = &ranges[i];
		uint64_t lines = 0, runs = 0;

		for (uint64_t w = 0; w < (r->nlines + 63) / 64; w++)
			lines += __builtin_popcountll(r->touched[w]);
		fprintf(out,
			"%s{\"label\": \"%s\", \"start\": %" PRIu64 ", \"end\": %" PRIu64
			", \"loads\": %" PRIu64 ", \"stores\": %" PRIu64
			", \"load_misses\": %" PRIu64 ", \"store_misses\": %" PRIu64
			", \"lines\": %" PRIu64 ", \"runs\": ",
			i ? ", " : "", r->label, r->start, r->end + END_SLACK, r->loads, r->stores,
			r->load_misses, r->store_misses, lines);
		/* Runs of touched lines, unless there are too many. */
		for (uint64_t l = 0; l < r->nlines; l++)
			if ((r->touched[l / 64] >> (l % 64) & 1) &&
			    (l == 0 || !(r->touched[(l - 1) / 64] >> ((l - 1) % 64) & 1)))
				runs++;
		if (runs > MAX_RUNS) {
			fputs("null}", out);
			continue;
		}
		fputc('[', out);
		runs = 0;
		for (uint64_t l = 0; l < r->nlines;) {
			uint64_t n = 0;

			while (l + n < r->nlines && (r->touched[(l + n) / 64] >> ((l + n) % 64) & 1))
				n++;
			if (n) {
				fprintf(out, "%s[%" PRIu64 ", %" PRIu64 "]", runs++ ? ", " : "", l, n);
				l += n;
			} else {
				l++;
			}
		}
		fputs("]}", out);
	}
	fputs("]}\n", out);
	fflush(out);
}

static void reset_phase(void)
{
	accesses = misses = 0;
	qemu_plugin_u64_set(qemu_plugin_scoreboard_u64(insn_board), 0, 0);
	for (unsigned int i = 1; i < (unsigned int)qemu_plugin_num_vcpus(); i++)
		qemu_plugin_u64_set(qemu_plugin_scoreboard_u64(insn_board), i, 0);
	for (int i = 0; i < nranges; i++) {
		struct range *r = &ranges[i];

		r->loads = r->stores = r->load_misses = r->store_misses = 0;
		memset(r->touched, 0, (r->nlines + 63) / 64 * sizeof(uint64_t));
	}
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
	bool store = qemu_plugin_mem_is_store(info);
	uint64_t pa;
	bool hit;

	(void)vcpu;
	(void)udata;
	if (!hw || qemu_plugin_hwaddr_is_io(hw))
		return;
	pa = qemu_plugin_hwaddr_phys_addr(hw);
	g_mutex_lock(&lock);
	if (store && vaddr == MEMMETER_MARK_VA && qemu_plugin_mem_size_shift(info) == 3) {
		qemu_plugin_mem_value v = qemu_plugin_mem_get_value(info);

		if (v.type == QEMU_PLUGIN_MEM_VALUE_U64 && v.data.u64 >> 32 == MEMMETER_MAGIC) {
			emit_phase();
			phase = v.data.u64 & 0xffffffffU;
			phase_seq++;
			if (phase == MEMMETER_RELOAD)
				load_ranges();
			reset_phase();
			g_mutex_unlock(&lock);
			return;
		}
	}
	accesses++;
	hit = llc_access(pa >> LINE_SHIFT);
	if (!hit)
		misses++;
	if (pa >= lo_bound && pa < hi_bound) {
		for (int i = 0; i < nranges; i++) {
			struct range *r = &ranges[i];
			uint64_t line;

			if (pa < r->start || pa >= r->end)
				continue;
			line = (pa - r->start) >> LINE_SHIFT;
			r->touched[line / 64] |= 1ULL << (line % 64);
			if (store) {
				r->stores++;
				r->store_misses += !hit;
			} else {
				r->loads++;
				r->load_misses += !hit;
			}
			break;
		}
	}
	g_mutex_unlock(&lock);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);

	(void)id;
	qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
		tb, QEMU_PLUGIN_INLINE_ADD_U64, qemu_plugin_scoreboard_u64(insn_board), n);
	for (size_t i = 0; i < n; i++)
		qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_mem,
						 QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
}

static void meter_exit(qemu_plugin_id_t id, void *p)
{
	(void)id;
	(void)p;
	g_mutex_lock(&lock);
	emit_phase();
	fclose(out);
	out = NULL;
	g_mutex_unlock(&lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
					   char **argv)
{
	if (!info->system_emulation) {
		fprintf(stderr, "memmeter: system emulation only\n");
		return -1;
	}
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (!eq) {
			fprintf(stderr, "memmeter: bad argument %s\n", argv[i]);
			return -1;
		}
		*eq = '\0';
		if (!strcmp(argv[i], "ranges"))
			ranges_path = strdup(eq + 1);
		else if (!strcmp(argv[i], "out"))
			out_path = strdup(eq + 1);
		else if (!strcmp(argv[i], "llc"))
			llc_bytes = strtoull(eq + 1, NULL, 0);
		else if (!strcmp(argv[i], "ways"))
			llc_ways = strtoull(eq + 1, NULL, 0);
		else {
			fprintf(stderr, "memmeter: unknown argument %s\n", argv[i]);
			return -1;
		}
	}
	if (!out_path || !llc_ways || llc_bytes < (llc_ways << LINE_SHIFT)) {
		fprintf(stderr, "memmeter: needs out=FILE and llc >= ways * 64\n");
		return -1;
	}
	out = fopen(out_path, "w");
	if (!out) {
		fprintf(stderr, "memmeter: cannot write %s\n", out_path);
		return -1;
	}
	llc_sets = llc_bytes / (llc_ways << LINE_SHIFT);
	llc_tags = calloc(llc_sets * llc_ways, sizeof(uint64_t));
	llc_age = calloc(llc_sets * llc_ways, sizeof(uint64_t));
	if (!llc_tags || !llc_age)
		return -1;
	g_mutex_init(&lock);
	insn_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
	load_ranges();
	fprintf(out, "{\"memmeter\": 1, \"llc_bytes\": %" PRIu64 ", \"ways\": %" PRIu64
		", \"line\": %d, \"mutant\": %d}\n", llc_bytes, llc_ways, 1 << LINE_SHIFT,
		END_SLACK != 0);
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
	qemu_plugin_register_atexit_cb(id, meter_exit, NULL);
	return 0;
}
