// SPDX-License-Identifier: GPL-2.0
/*
 * race_ager PID SECONDS THREADS MIN_VMA_BYTES
 *
 * Ages exactly the memory of one process (an inner VM's VMM) as fast as it
 * can, from THREADS threads at once, through /sys/kernel/mm/page_idle/bitmap:
 * for each page that runs the clear_young MMU notifier -> kvm_age_gfn().
 * Marking all of RAM from a shell spends most of a pass on pages that are not
 * the VM's; here a pass touches only the VM's pages, so passes are short and
 * every page is aged again and again.
 *
 * Targets: the anonymous private writable mappings of PID of at least
 * MIN_VMA_BYTES (the guest memory slots), their present PFNs from
 * /proc/PID/pagemap (needs CAP_SYS_ADMIN), re-read every REFRESH_S.  Even threads
 * walk the bitmap words in ascending PFN order, odd threads in descending
 * order, so two threads cross each other on the same pages twice a pass
 * instead of trailing each other at a fixed distance.
 *
 * Stops after SECONDS or when PID exits.  Prints ORCH-METRIC lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BITMAP "/sys/kernel/mm/page_idle/bitmap"
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define MAX_THREADS 16
#define REFRESH_S 0.5

struct word {
	uint64_t index;	/* bitmap word: PFNs index*64 .. index*64+63 */
	uint64_t bits;
};

static pid_t target;
static long min_vma;
static double deadline;
static int bitmap_fd;
static unsigned long page;

struct stats {
	uint64_t passes, pages, writes, write_failures, empty_passes;
	pthread_t tid;
	int id;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_word(const void *a, const void *b)
{
	const struct word *x = a, *y = b;

	return x->index < y->index ? -1 : x->index > y->index;
}

/* Present PFNs of the target mappings, folded into sorted bitmap words. */
static size_t collect(struct word **out, uint64_t *npages)
{
	char path[64], line[512];
	FILE *maps;
	int pm;
	size_t n = 0, cap = 0, w = 0;
	uint64_t *pfns = NULL;
	struct word *words;

	*npages = 0;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)target);
	maps = fopen(path, "r");
	if (!maps)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)target);
	pm = open(path, O_RDONLY);
	if (pm < 0) {
		fclose(maps);
		return 0;
	}
	while (fgets(line, sizeof(line), maps)) {
		unsigned long start, end, off, ino;
		char perms[8], dev[16], name[256] = "";
		uint64_t buf[512];

		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &start, &end, perms, &off, dev, &ino, name) < 6)
			continue;
		/* Anonymous private memory only: no file, no [heap]/[stack]. */
		if (strcmp(perms, "rw-p") || ino != 0 || name[0] == '[' || (long)(end - start) < min_vma)
			continue;
		for (unsigned long va = start; va < end; va += sizeof(buf) / 8 * page) {
			size_t want = (end - va) / page < 512 ? (end - va) / page : 512;
			ssize_t got = pread(pm, buf, want * 8, (off_t)(va / page) * 8);

			if (got <= 0)
				break;
			for (size_t i = 0; i < (size_t)got / 8; i++) {
				if (!(buf[i] & PM_PRESENT) || !(buf[i] & PM_PFN_MASK))
					continue;
				if (n == cap) {
					cap = cap ? cap * 2 : 4096;
					pfns = realloc(pfns, cap * sizeof(*pfns));
					if (!pfns)
						abort();
				}
				pfns[n++] = buf[i] & PM_PFN_MASK;
			}
		}
	}
	close(pm);
	fclose(maps);
	*npages = n;
	words = calloc(n ? n : 1, sizeof(*words));
	if (!words)
		abort();
	for (size_t i = 0; i < n; i++) {
		words[i].index = pfns[i] / 64;
		words[i].bits = 1ULL << (pfns[i] % 64);
	}
	qsort(words, n, sizeof(*words), cmp_word);
	for (size_t i = 0; i < n; i++) {
		if (w && words[w - 1].index == words[i].index)
			words[w - 1].bits |= words[i].bits;
		else
			words[w++] = words[i];
	}
	free(pfns);
	*out = words;
	return w;
}

static void *ager(void *arg)
{
	struct stats *st = arg;
	struct word *words = NULL;
	uint64_t npages = 0;
	size_t n = 0;
	double refresh = 0;

	while (now() < deadline && kill(target, 0) == 0) {
		/* Pages can move or go: re-read the PFNs every REFRESH_S, not every pass. */
		if (now() >= refresh) {
			free(words);
			n = collect(&words, &npages);
			refresh = now() + REFRESH_S;
		}
		if (!n) {
			st->empty_passes++;
			usleep(10000);
			refresh = 0;
			continue;
		}
		for (size_t k = 0; k < n; k++) {
			struct word *wd = &words[st->id % 2 ? n - 1 - k : k];

			if (pwrite(bitmap_fd, &wd->bits, 8, (off_t)wd->index * 8) != 8)
				st->write_failures++;
			st->writes++;
		}
		st->passes++;
		st->pages += npages;
	}
	free(words);
	return NULL;
}

int main(int argc, char **argv)
{
	struct stats st[MAX_THREADS] = { 0 };
	uint64_t passes = 0, pages = 0, writes = 0, fails = 0, empty = 0;
	int threads;
	double t0, secs;

	if (argc != 5) {
		fprintf(stderr, "usage: %s PID SECONDS THREADS MIN_VMA_BYTES\n", argv[0]);
		return 2;
	}
	target = atoi(argv[1]);
	secs = atof(argv[2]);
	threads = atoi(argv[3]);
	min_vma = atol(argv[4]);
	if (target <= 0 || secs <= 0 || threads < 1 || threads > MAX_THREADS) {
		fprintf(stderr, "race_ager: bad arguments\n");
		return 2;
	}
	page = sysconf(_SC_PAGESIZE);
	bitmap_fd = open(BITMAP, O_WRONLY);
	if (bitmap_fd < 0) {
		fprintf(stderr, "race_ager: open %s: %s\n", BITMAP, strerror(errno));
		return 2;
	}
	t0 = now();
	deadline = t0 + secs;
	for (int i = 0; i < threads; i++) {
		st[i].id = i;
		if (pthread_create(&st[i].tid, NULL, ager, &st[i])) {
			fprintf(stderr, "race_ager: pthread_create failed\n");
			return 2;
		}
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(st[i].tid, NULL);
		passes += st[i].passes;
		pages += st[i].pages;
		writes += st[i].writes;
		fails += st[i].write_failures;
		empty += st[i].empty_passes;
	}
	printf("ORCH-METRIC aging_s %.2f\n", now() - t0);
	printf("ORCH-METRIC aging_threads %d\n", threads);
	printf("ORCH-METRIC aging_passes %" PRIu64 "\n", passes);
	printf("ORCH-METRIC aged_pages %" PRIu64 "\n", pages);
	printf("ORCH-METRIC pages_per_pass %.1f\n", passes ? (double)pages / passes : 0.0);
	printf("ORCH-METRIC bitmap_writes %" PRIu64 "\n", writes);
	printf("ORCH-METRIC aging_write_failures %" PRIu64 "\n", fails);
	printf("ORCH-METRIC empty_passes %" PRIu64 "\n", empty);
	return passes && !fails ? 0 : 1;
}
