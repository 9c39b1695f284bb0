// SPDX-License-Identifier: GPL-2.0
/*
 * memcg_reclaim: an inner VM under memory pressure from its own memcg.
 *
 * An inner VM (memstress) with N vCPUs sweeps B bytes per vCPU.  After the
 * populating pass this process caps its memcg (memory.max = L% of
 * memory.current, so the VM's memory no longer fits) and a thread asks for
 * proactive reclaim through memory.reclaim every I ms, while the vCPUs keep
 * sweeping for D seconds.  Reclaim then evicts VM pages to swap: the rmap walk
 * calls the clear_flush_young notifier (KVM ages its stage-2 mappings), and
 * unmapping calls invalidate_range_start/end; the vCPUs fault the pages back.
 *
 * memory.max is lifted before the vCPU threads are joined (a pass can take
 * very long while the VM thrashes) and in every exit path this program
 * controls.  Anonymous memory needs swap to be reclaimed (else memory.max
 * ends in the OOM killer): run it through guest/workloads/memcg-reclaim.sh,
 * which sets up zram.
 *
 * Results are ORCH-METRIC lines (see orch_vm.h): vCPU throughput, the limit,
 * memory.reclaim requests, and memory.stat deltas of the memcg over the
 * pressure phase (pgsteal = pages reclaimed).
 */
#include "orch_opts.h"

#define LIMIT_PCT_DEFAULT 75

static char cgroup[4096];
static uint64_t reclaim_bytes = 8ULL << 20;
static unsigned int interval_ms = 250;
static bool reclaim_stop;

static struct {
	uint64_t requests, ok, eagain, errors;
	double total_s, max_s;
} reclaim;

static void *reclaim_main(void *arg)
{
	char path[4200], amount[32];
	double t0, dt;
	int err;

	orch_cgroup_file(path, sizeof(path), cgroup, "memory.reclaim");
	snprintf(amount, sizeof(amount), "%" PRIu64 "\n", reclaim_bytes);
	while (!__atomic_load_n(&reclaim_stop, __ATOMIC_ACQUIRE)) {
		t0 = orch_now();
		err = orch_write_file(path, amount);
		dt = orch_now() - t0;
		reclaim.requests++;
		reclaim.total_s += dt;
		if (dt > reclaim.max_s)
			reclaim.max_s = dt;
		if (!err) {
			reclaim.ok++;
		} else if (err == -EAGAIN) {
			reclaim.eagain++;	/* less than asked for could be reclaimed */
		} else {
			if (!reclaim.errors)
				fprintf(stderr, "memory.reclaim: %s\n", strerror(-err));
			reclaim.errors++;
		}
		if (interval_ms)
			usleep(interval_ms * 1000);
	}
	return NULL;
}

static void help(const char *name)
{
	printf("usage: %s [-m mode] [-v vcpus] [-b bytes] [-d seconds] [-l limit%%] [-r bytes] [-I ms] [-w write%%]\n"
	       ORCH_HELP_M
	       ORCH_HELP_V
	       ORCH_HELP_B
	       " -d: seconds of sweeping under pressure (default 10)\n"
	       ORCH_HELP_L(LIMIT_PCT_DEFAULT)
	       " -r: bytes per memory.reclaim request; 0: no proactive reclaim (default 8M)\n"
	       " -I: ms between memory.reclaim requests (default 250)\n"
	       ORCH_HELP_W, name);
	guest_modes_help();
	exit(0);
}

int main(int argc, char *argv[])
{
	struct orch_vm_opts o = ORCH_VM_OPTS_INIT(LIMIT_PCT_DEFAULT);
	uint64_t limit = 0;
	int opt, limit_pct;
	int64_t before[ORCH_NR_MEMCG_STATS], after[ORCH_NR_MEMCG_STATS];
	unsigned int seconds = 10;
	enum vm_guest_mode mode;
	pthread_t thread;
	struct kvm_vm *vm;

	guest_modes_append_default();
	while ((opt = getopt(argc, argv, ORCH_VM_OPTS "d:r:I:")) != -1) {
		if (orch_vm_opt(&o, opt, optarg))
			continue;
		switch (opt) {
		case 'd':
			seconds = atoi_positive("Seconds under pressure", optarg);
			break;
		case 'r':
			reclaim_bytes = parse_size(optarg);
			break;
		case 'I':
			interval_ms = atoi_non_negative("Reclaim interval", optarg);
			break;
		default:
			help(argv[0]);
		}
	}
	mode = orch_vm_opts_mode(&o);
	limit_pct = o.limit_pct;
	orch_own_cgroup(cgroup, sizeof(cgroup));
	TEST_ASSERT(strcmp(cgroup, "/"), "run in a child memcg, not the root cgroup");
	TEST_ASSERT(!limit_pct || orch_have_swap(),
		    "no swap: a memory.max below the VM's memory would end in the OOM killer "
		    "(run through memcg-reclaim.sh, which sets up zram, or pass -l 0)");

	vm = orch_vm_populate(mode, o.nr_vcpus, o.vcpu_bytes, o.write_percent, 0);

	orch_memcg_stats(cgroup, before);
	if (limit_pct) {
		limit = orch_memcg_cap(cgroup, limit_pct);
	} else {
		orch_metric_u64("usage_bytes", orch_memcg_u64(cgroup, "memory.current"));
		orch_metric_u64("limit_bytes", 0);
	}
	if (reclaim_bytes)
		pthread_create(&thread, NULL, reclaim_main, NULL);
	orch_vcpus_go();
	sleep(seconds);
	orch_vcpus_stop();
	if (reclaim_bytes) {
		__atomic_store_n(&reclaim_stop, true, __ATOMIC_RELEASE);
		pthread_join(thread, NULL);
	}
	/* Stats of the pressure phase only: before the limit goes and vCPUs catch up. */
	orch_memcg_stats(cgroup, after);
	orch_memcg_lift();
	orch_vcpus_report(vm, o.vcpu_bytes / memstress_args.guest_page_size);

	orch_metric_u64("reclaim_requests", reclaim.requests);
	orch_metric_u64("reclaim_ok", reclaim.ok);
	orch_metric_u64("reclaim_eagain", reclaim.eagain);
	orch_metric_u64("reclaim_errors", reclaim.errors);
	orch_metric("reclaim_total_s", reclaim.total_s);
	orch_metric("reclaim_max_s", reclaim.max_s);
	orch_memcg_report(before, after);
	pr_info("pressure phase: memory.max %" PRIu64 " bytes, %" PRId64 " pages reclaimed (pgsteal)\n",
		limit, after[1] - before[1]);
	memstress_destroy_vm(vm);
	TEST_ASSERT(!reclaim.errors, "%" PRIu64 " memory.reclaim request(s) failed", reclaim.errors);
	return 0;
}
