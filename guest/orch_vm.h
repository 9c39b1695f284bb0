/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by the project's inner-VM workloads (the C files in guest/): one memstress VM
 * whose vCPUs sweep their memory in passes, a start line after the first
 * (populating) pass, metric lines for the orchestrator, and the memcg files of
 * the calling process.
 *
 * Output contract: `ORCH-METRIC <name> <value>` lines on stdout, one per
 * metric (orchestrator/workload/definitions.py, parser "metric-lines").
 * The command-line options the programs share are parsed in orch_opts.h.
 */
#ifndef ORCH_VM_H
#define ORCH_VM_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guest_modes.h"
#include "kvm_util.h"
#if __has_include("memstress.h")
#include "memstress.h"
#else
/*
 * Before 6.2 the library was perf_test_util (renamed memstress in 6.2, same
 * functions and structures).  Only the write mix differs: write_percent
 * (0-100) there, wr_fract (every Nth access writes; INT_MAX: none) here.
 */
#include <limits.h>
#include "perf_test_util.h"
#define ORCH_PERF_TEST_UTIL 1
#define memstress_args perf_test_args
#define memstress_vcpu_args perf_test_vcpu_args
#define memstress_create_vm perf_test_create_vm
#define memstress_destroy_vm perf_test_destroy_vm
#define memstress_start_vcpu_threads perf_test_start_vcpu_threads
#define memstress_join_vcpu_threads perf_test_join_vcpu_threads
static inline void memstress_set_write_percent(struct kvm_vm *vm, uint32_t write_percent)
{
	perf_test_set_wr_fract(vm, write_percent ? 100 / write_percent : INT_MAX);
}
#endif
#include "test_util.h"
#include "ucall_common.h"

#ifdef ORCH_PERF_TEST_UTIL
/* test_util.h gained atoi_positive()/atoi_non_negative() in 6.3. */
static inline uint32_t orch_parse_count(const char *name, const char *text, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 0);
	TEST_ASSERT(!errno && end != text && !*end && v >= min && v <= INT_MAX,
		    "%s must be an integer >= %ld, got '%s'", name, min, text);
	return v;
}
#define atoi_positive(name, text) orch_parse_count(name, text, 1)
#define atoi_non_negative(name, text) orch_parse_count(name, text, 0)
#endif

static inline double orch_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void orch_metric(const char *name, double value)
{
	printf("ORCH-METRIC %s %.6f\n", name, value);
	fflush(stdout);
}

static inline void orch_metric_u64(const char *name, uint64_t value)
{
	printf("ORCH-METRIC %s %" PRIu64 "\n", name, value);
	fflush(stdout);
}

/* -- The vCPUs ----------------------------------------------------------- */

struct orch_vcpus {
	int nr;
	uint64_t target_passes;		/* timed passes per vCPU; 0: until stop */
	pthread_barrier_t populated;	/* vCPUs + main: first pass done */
	pthread_barrier_t start;	/* vCPUs + main: timed passes begin */
	bool stop;			/* set by main: finish the current pass, return */
	int finished;			/* vCPUs done with their timed passes */
	uint64_t passes[KVM_MAX_VCPUS];
	double seconds[KVM_MAX_VCPUS];	/* wall time of the timed passes */
	double populate_s[KVM_MAX_VCPUS];
	double pass_max_s[KVM_MAX_VCPUS];
};

static struct orch_vcpus orch_vcpus;

/* One sweep over the vCPU's memory: memstress_guest_code syncs after each. */
static inline void orch_vcpu_pass(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("vCPU %u: unexpected exit %s", vcpu->id, exit_reason_str(vcpu->run->exit_reason));
	}
}

static void orch_vcpu_main(struct memstress_vcpu_args *args)
{
	struct orch_vcpus *v = &orch_vcpus;
	int i = args->vcpu_idx;
	double t0, p0, dt;
	uint64_t n = 0;

	t0 = orch_now();
	orch_vcpu_pass(args->vcpu);
	v->populate_s[i] = orch_now() - t0;
	pthread_barrier_wait(&v->populated);
	pthread_barrier_wait(&v->start);

	t0 = orch_now();
	while (!__atomic_load_n(&v->stop, __ATOMIC_ACQUIRE) &&
	       (!v->target_passes || n < v->target_passes)) {
		p0 = orch_now();
		orch_vcpu_pass(args->vcpu);
		dt = orch_now() - p0;
		if (dt > v->pass_max_s[i])
			v->pass_max_s[i] = dt;
		n++;
	}
	v->seconds[i] = orch_now() - t0;
	v->passes[i] = n;
	__atomic_add_fetch(&v->finished, 1, __ATOMIC_RELEASE);
}

static inline bool orch_vcpus_finished(void)
{
	return __atomic_load_n(&orch_vcpus.finished, __ATOMIC_ACQUIRE) == orch_vcpus.nr;
}

/*
 * Create the VM (vcpu_bytes of anonymous memory per vCPU, each vCPU its own
 * part), start the vCPU threads and wait until every vCPU has touched all of
 * its memory once.  The caller then sets up its side and calls
 * orch_vcpus_go().
 */
static inline struct kvm_vm *orch_vm_populate(enum vm_guest_mode mode, int nr_vcpus, uint64_t vcpu_bytes,
					      int write_percent, uint64_t target_passes)
{
	struct orch_vcpus *v = &orch_vcpus;
	struct kvm_vm *vm;
	double t0, max = 0;
	int i;

	v->nr = nr_vcpus;
	v->target_passes = target_passes;
	pthread_barrier_init(&v->populated, NULL, nr_vcpus + 1);
	pthread_barrier_init(&v->start, NULL, nr_vcpus + 1);
	vm = memstress_create_vm(mode, nr_vcpus, vcpu_bytes, 1, VM_MEM_SRC_ANONYMOUS, true);
	memstress_set_write_percent(vm, write_percent);
	t0 = orch_now();
	memstress_start_vcpu_threads(nr_vcpus, orch_vcpu_main);
	pthread_barrier_wait(&v->populated);
	for (i = 0; i < nr_vcpus; i++)
		if (v->populate_s[i] > max)
			max = v->populate_s[i];
	orch_metric("populate_s", orch_now() - t0);
	orch_metric("populate_vcpu_max_s", max);
	return vm;
}

static inline void orch_vcpus_go(void)
{
	pthread_barrier_wait(&orch_vcpus.start);
}

static inline void orch_vcpus_stop(void)
{
	__atomic_store_n(&orch_vcpus.stop, true, __ATOMIC_RELEASE);
}

/* Join the vCPU threads and print the vCPU metrics (pages = guest pages per vCPU). */
static inline void orch_vcpus_report(struct kvm_vm *vm, uint64_t pages_per_vcpu)
{
	struct orch_vcpus *v = &orch_vcpus;
	double wall = 0, sum_s = 0, pass_max = 0;
	uint64_t passes = 0;
	int i;

	memstress_join_vcpu_threads(v->nr);
	for (i = 0; i < v->nr; i++) {
		passes += v->passes[i];
		sum_s += v->seconds[i];
		if (v->seconds[i] > wall)
			wall = v->seconds[i];
		if (v->pass_max_s[i] > pass_max)
			pass_max = v->pass_max_s[i];
	}
	orch_metric_u64("vcpus", v->nr);
	orch_metric_u64("vcpu_passes", passes);
	orch_metric("vcpu_wall_s", wall);
	orch_metric("vcpu_pass_avg_s", passes ? sum_s / passes : 0);
	orch_metric("vcpu_pass_max_s", pass_max);
	/* Throughput: guest pages swept per second, all vCPUs together. */
	orch_metric("vcpu_pages_per_s", wall > 0 ? passes * pages_per_vcpu / wall : 0);
}

/* -- Files and the caller's memcg ----------------------------------------- */

/* Whole file into a malloc'd NUL-terminated buffer; NULL on error (errno set). */
static inline char *orch_read_file(const char *path)
{
	size_t cap = 16384, len = 0;
	char *buf = malloc(cap);
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0 || !buf) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			TEST_ASSERT(buf, "out of memory reading %s", path);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/* Write a string with one write(2); 0 or -errno. */
static inline int orch_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

/* The cgroup v2 path of this process ("/orch-workload"), from /proc/self/cgroup. */
static inline void orch_own_cgroup(char *path, size_t size)
{
	char *text = orch_read_file("/proc/self/cgroup"), *line, *save = NULL;

	TEST_ASSERT(text, "cannot read /proc/self/cgroup: %s", strerror(errno));
	path[0] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "0::", 3)) {
			snprintf(path, size, "%s", line + 3);
			break;
		}
	}
	free(text);
	TEST_ASSERT(path[0] == '/', "no cgroup v2 entry (0::PATH) in /proc/self/cgroup");
}

/* /sys/fs/cgroup<cgroup>/<file> */
static inline void orch_cgroup_file(char *out, size_t size, const char *cgroup, const char *file)
{
	snprintf(out, size, "/sys/fs/cgroup%s/%s", strcmp(cgroup, "/") ? cgroup : "", file);
}

/* One "key value" line of memory.stat (or any such file); -1 when absent. */
static inline int64_t orch_stat_value(const char *text, const char *key)
{
	size_t klen = strlen(key);
	const char *p = text;

	while (p && *p) {
		if (!strncmp(p, key, klen) && p[klen] == ' ')
			return strtoll(p + klen + 1, NULL, 10);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

/* -- Memory pressure on the caller's memcg -------------------------------- */

/* Memcg events reported as deltas over a pressure phase (memory.stat keys). */
static const char *const orch_memcg_stat_keys[] = {
	"pgscan", "pgsteal", "pgrefill", "pgactivate", "pgdeactivate", "pgmajfault",
	"workingset_refault_anon", "workingset_activate_anon", "pswpin", "pswpout",
	"swpin_zero", "swpout_zero", "thp_swpout",
};
#define ORCH_NR_MEMCG_STATS (sizeof(orch_memcg_stat_keys) / sizeof(orch_memcg_stat_keys[0]))

static char orch_memcg_max_file[4200];

/* Lift memory.max again: a capped memcg left behind thrashes the next run. */
static inline void orch_memcg_lift(void)
{
	if (orch_memcg_max_file[0])
		orch_write_file(orch_memcg_max_file, "max\n");
}

static void orch_memcg_on_signal(int sig)
{
	orch_memcg_lift();
	signal(sig, SIG_DFL);
	raise(sig);
}

static inline bool orch_have_swap(void)
{
	char *text = orch_read_file("/proc/swaps");
	bool ok = text && strchr(text, '\n') && strchr(strchr(text, '\n') + 1, '/');

	free(text);
	return ok;
}

static inline uint64_t orch_memcg_u64(const char *cgroup, const char *file)
{
	char path[4200];
	char *text;
	uint64_t v;

	orch_cgroup_file(path, sizeof(path), cgroup, file);
	text = orch_read_file(path);
	TEST_ASSERT(text, "cannot read %s: %s", path, strerror(errno));
	v = strtoull(text, NULL, 10);
	free(text);
	return v;
}

/* memory.stat values of orch_memcg_stat_keys (-1: not in this kernel). */
static inline void orch_memcg_stats(const char *cgroup, int64_t *out)
{
	char path[4200];
	char *text;
	size_t i;

	orch_cgroup_file(path, sizeof(path), cgroup, "memory.stat");
	text = orch_read_file(path);
	TEST_ASSERT(text, "cannot read %s: %s", path, strerror(errno));
	for (i = 0; i < ORCH_NR_MEMCG_STATS; i++)
		out[i] = orch_stat_value(text, orch_memcg_stat_keys[i]);
	free(text);
}

/* ORCH-METRIC memcg_<key> lines: the deltas between two orch_memcg_stats(). */
static inline void orch_memcg_report(const int64_t *before, const int64_t *after)
{
	char name[64];
	size_t i;

	for (i = 0; i < ORCH_NR_MEMCG_STATS; i++) {
		if (before[i] < 0 || after[i] < 0)
			continue;
		snprintf(name, sizeof(name), "memcg_%s", orch_memcg_stat_keys[i]);
		orch_metric_u64(name, after[i] - before[i]);
	}
}

/*
 * Cap the caller's memcg at pct% of its current usage (page aligned): the
 * write reclaims down to the limit before it returns.  The limit is lifted at
 * exit (TEST_ASSERT failures exit()) and on SIGTERM/SIGINT.  Anonymous memory
 * needs swap to be reclaimed, else the cap ends in the OOM killer.  Prints
 * usage_bytes, limit_bytes and limit_s; returns the limit.
 */
static inline uint64_t orch_memcg_cap(const char *cgroup, int pct)
{
	uint64_t usage = orch_memcg_u64(cgroup, "memory.current"), limit;
	char text[64];
	double t0;
	int err;

	TEST_ASSERT(strcmp(cgroup, "/"), "run in a child memcg, not the root cgroup");
	TEST_ASSERT(orch_have_swap(),
		    "no swap: a memory.max below the VM's memory would end in the OOM killer "
		    "(run through workloads/with-swap.sh, which sets up zram)");
	orch_cgroup_file(orch_memcg_max_file, sizeof(orch_memcg_max_file), cgroup, "memory.max");
	atexit(orch_memcg_lift);
	signal(SIGTERM, orch_memcg_on_signal);
	signal(SIGINT, orch_memcg_on_signal);
	limit = (usage / 100 * pct) & ~4095ULL;
	snprintf(text, sizeof(text), "%" PRIu64 "\n", limit);
	t0 = orch_now();
	err = orch_write_file(orch_memcg_max_file, text);
	TEST_ASSERT(!err, "writing %s to %s: %s", text, orch_memcg_max_file, strerror(-err));
	orch_metric("limit_s", orch_now() - t0);
	orch_metric_u64("usage_bytes", usage);
	orch_metric_u64("limit_bytes", limit);
	return limit;
}

#endif /* ORCH_VM_H */
