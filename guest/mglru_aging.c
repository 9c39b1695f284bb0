// SPDX-License-Identifier: GPL-2.0
/*
 * mglru_aging: MGLRU aging of memory an inner VM is using.
 *
 * An inner VM (memstress) with N vCPUs sweeps B bytes per vCPU.  After one
 * populating pass the vCPUs run K timed passes while a thread of this process
 * runs MGLRU aging passes on the process's own memcg through
 * /sys/kernel/debug/lru_gen: for every node, "+ MEMCG_ID NID MAX_SEQ 1 1"
 * (can_swap, force_scan), MAX_SEQ being the current max generation of that
 * memcg and node.  With the MM walk enabled (lru_gen/enabled 0x0002 and a
 * hardware access flag), each pass walks this process's page tables and calls
 * the clear_young MMU notifier for every young PTE: KVM then ages its stage-2
 * mappings of the VM's memory (kvm_age_gfn) concurrently with the vCPUs.
 *
 * The aging thread keeps going until every vCPU is done and at least P passes
 * have completed.  With -d D the vCPUs sweep for D seconds instead of a fixed
 * number of passes (the wall time is then fixed and vCPU throughput is the
 * figure): needed where a vCPU pass costs a thousand times more once aging
 * has cleared the stage-2 access flag (software-managed AF), so that a fixed
 * pass count would measure either the fast or the faulting regime by chance.  With -l L the memcg is also capped at L% of its usage
 * after populating (memory.max; swap needed: run through workloads/with-swap.sh),
 * so reclaim evicts VM pages (invalidations under the write side of mmu_lock)
 * concurrently with the aging passes and the vCPUs' faults.  Results are ORCH-METRIC lines (see orch_vm.h): vCPU wall
 * time and throughput, aging passes, their total/average/max duration.
 */
#include "orch_opts.h"

#define LRU_GEN_FILE "/sys/kernel/debug/lru_gen"
#define MAX_NODES 64
#define LIMIT_PCT_DEFAULT 0

struct lru_target {
	int memcg_id;
	int nr_nodes;
	int nid[MAX_NODES];
	unsigned long max_seq[MAX_NODES];
};

struct aging_stats {
	uint64_t passes;
	uint64_t commands;	/* writes, one per node and pass */
	uint64_t stale;		/* EINVAL: max_seq moved between read and write */
	uint64_t errors;	/* any other failed write */
	double total_s, max_s;
	unsigned long first_seq, last_seq;	/* max_seq of the first node, before and after */
};

static const char *cgroup_path;
static uint64_t min_passes = 1;
static unsigned int sleep_ms;
static unsigned int duration_s;
static struct aging_stats aging;

/*
 * Find the memcg whose path is `path` in the lru_gen text and the max seq of
 * each of its nodes.  Lines: "memcg ID PATH", " node NID", then one line per
 * generation "SEQ AGE_MS ANON FILE" (seq ascending).  0 when found.
 */
static int parse_lru_gen(char *text, const char *path, struct lru_target *t)
{
	char *line, *save = NULL, name[4096];
	bool in_memcg = false;
	unsigned long seq, age;
	long anon, file;
	int id, nid;
	char extra;

	memset(t, 0, sizeof(*t));
	t->memcg_id = -1;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "memcg ", 6)) {
			name[0] = '\0';
			if (sscanf(line, "memcg %d %4095s", &id, name) < 1)
				continue;
			if (in_memcg)
				break;	/* past our memcg */
			/* The root memcg prints an empty path in some versions. */
			in_memcg = !strcmp(name, path) || (!name[0] && !strcmp(path, "/"));
			if (in_memcg)
				t->memcg_id = id;
		} else if (!in_memcg) {
			continue;
		} else if (sscanf(line, " node %d", &nid) == 1) {
			TEST_ASSERT(t->nr_nodes < MAX_NODES, "more than %d nodes", MAX_NODES);
			t->nid[t->nr_nodes++] = nid;
		} else if (t->nr_nodes && sscanf(line, " %lu %lu %ld %ld %c", &seq, &age, &anon, &file, &extra) == 4) {
			if (seq > t->max_seq[t->nr_nodes - 1])
				t->max_seq[t->nr_nodes - 1] = seq;
		}
	}
	return t->memcg_id >= 0 && t->nr_nodes ? 0 : -1;
}

static int read_target(struct lru_target *t)
{
	char *text = orch_read_file(LRU_GEN_FILE);
	int ret;

	TEST_ASSERT(text, "cannot read %s: %s (CONFIG_LRU_GEN, debugfs mounted?)", LRU_GEN_FILE, strerror(errno));
	ret = parse_lru_gen(text, cgroup_path, t);
	free(text);
	return ret;
}

/* One aging pass: every node of our memcg one generation older. */
static void aging_pass(int fd)
{
	struct lru_target t;
	char cmd[128];
	double t0, dt;
	int i, len;

	TEST_ASSERT(!read_target(&t), "memcg %s not in %s", cgroup_path, LRU_GEN_FILE);
	t0 = orch_now();
	for (i = 0; i < t.nr_nodes; i++) {
		len = snprintf(cmd, sizeof(cmd), "+ %d %d %lu 1 1\n", t.memcg_id, t.nid[i], t.max_seq[i]);
		aging.commands++;
		if (write(fd, cmd, len) == len)
			continue;
		if (errno == EINVAL) {
			aging.stale++;
		} else {
			if (!aging.errors)
				fprintf(stderr, "aging: write \"%.*s\" to %s: %s\n", len - 1, cmd, LRU_GEN_FILE,
					strerror(errno));
			aging.errors++;
		}
	}
	dt = orch_now() - t0;
	aging.passes++;
	aging.total_s += dt;
	if (dt > aging.max_s)
		aging.max_s = dt;
}

static void *aging_main(void *arg)
{
	struct lru_target t;
	int fd = open(LRU_GEN_FILE, O_WRONLY);

	TEST_ASSERT(fd >= 0, "cannot open %s for writing: %s", LRU_GEN_FILE, strerror(errno));
	while (!orch_vcpus_finished() || aging.passes < min_passes) {
		aging_pass(fd);
		if (sleep_ms)
			usleep(sleep_ms * 1000);
	}
	close(fd);
	if (!read_target(&t))
		aging.last_seq = t.max_seq[0];
	return NULL;
}

static void help(const char *name)
{
	printf("usage: %s [-m mode] [-v vcpus] [-b bytes] [-i passes] [-w write%%] [-p min_aging_passes] [-s sleep_ms] [-l limit%%]\n"
	       ORCH_HELP_M
	       ORCH_HELP_V
	       ORCH_HELP_B
	       " -i: timed passes over its memory per vCPU (default 10)\n"
	       ORCH_HELP_W
	       " -p: run at least this many aging passes (default 1)\n"
	       " -s: sleep between aging passes in ms (default 0)\n"
	       ORCH_HELP_L(LIMIT_PCT_DEFAULT)
	       " -d: sweep for this many seconds instead of -i passes; 0: use -i (default 0)\n", name);
	guest_modes_help();
	exit(0);
}

int main(int argc, char *argv[])
{
	struct orch_vm_opts o = ORCH_VM_OPTS_INIT(LIMIT_PCT_DEFAULT);
	enum vm_guest_mode mode;
	uint64_t passes = 10;
	int opt;
	struct lru_target t;
	char cgroup[4096];
	pthread_t thread;
	int64_t before[ORCH_NR_MEMCG_STATS], after[ORCH_NR_MEMCG_STATS];
	struct kvm_vm *vm;
	double t_go, t_done;

	guest_modes_append_default();
	while ((opt = getopt(argc, argv, ORCH_VM_OPTS "i:p:s:d:")) != -1) {
		if (orch_vm_opt(&o, opt, optarg))
			continue;
		switch (opt) {
		case 'i':
			passes = atoi_positive("Timed passes", optarg);
			break;
		case 'p':
			min_passes = atoi_non_negative("Minimum aging passes", optarg);
			break;
		case 's':
			sleep_ms = atoi_non_negative("Sleep between passes", optarg);
			break;
		case 'd':
			duration_s = atoi_non_negative("Seconds of sweeping", optarg);
			break;
		default:
			help(argv[0]);
		}
	}
	mode = orch_vm_opts_mode(&o);

	orch_own_cgroup(cgroup, sizeof(cgroup));
	cgroup_path = cgroup;
	/* Fail before creating the VM if aging cannot work here. */
	TEST_ASSERT(!read_target(&t), "memcg %s not found in %s", cgroup_path, LRU_GEN_FILE);
	pr_info("memcg %s: id %d, %d node(s), max_seq %lu\n", cgroup_path, t.memcg_id, t.nr_nodes, t.max_seq[0]);

	vm = orch_vm_populate(mode, o.nr_vcpus, o.vcpu_bytes, o.write_percent, duration_s ? 0 : passes);
	if (!read_target(&t))
		aging.first_seq = t.max_seq[0];
	orch_memcg_stats(cgroup_path, before);
	if (o.limit_pct)
		orch_memcg_cap(cgroup_path, o.limit_pct);
	pthread_create(&thread, NULL, aging_main, NULL);
	t_go = orch_now();
	orch_vcpus_go();
	if (duration_s) {
		sleep(duration_s);
		orch_vcpus_stop();	/* each vCPU finishes its current pass */
	}
	pthread_join(thread, NULL);
	t_done = orch_now();
	/* Memcg events of the measured phase only, before the limit goes. */
	orch_memcg_stats(cgroup_path, after);
	orch_memcg_lift();
	orch_vcpus_report(vm, o.vcpu_bytes / memstress_args.guest_page_size);
	orch_metric("measured_s", t_done - t_go);
	orch_memcg_report(before, after);
	if (before[1] >= 0 && after[1] >= 0)
		orch_metric("reclaim_pages_per_s", (after[1] - before[1]) / (t_done - t_go));

	pr_info("aging: %" PRIu64 " passes in %.3f s (max %.3f s), max_seq %lu -> %lu\n",
		aging.passes, aging.total_s, aging.max_s, aging.first_seq, aging.last_seq);
	orch_metric_u64("aging_passes", aging.passes);
	orch_metric("aging_total_s", aging.total_s);
	orch_metric("aging_avg_s", aging.passes ? aging.total_s / aging.passes : 0);
	orch_metric("aging_max_s", aging.max_s);
	orch_metric_u64("aging_commands", aging.commands);
	orch_metric_u64("aging_stale", aging.stale);
	orch_metric_u64("aging_errors", aging.errors);
	orch_metric_u64("aging_generations", aging.last_seq - aging.first_seq);
	memstress_destroy_vm(vm);
	TEST_ASSERT(!aging.errors, "%" PRIu64 " aging command(s) failed", aging.errors);
	TEST_ASSERT(aging.commands > aging.stale, "no aging command found the current max_seq");
	return 0;
}
