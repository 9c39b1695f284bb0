/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Options every inner-VM workload in guest/ takes, parsed and checked the
 * same way (memcg_reclaim.c, mglru_aging.c):
 *   -m mode  -v vcpus  -b bytes per vCPU  -w write%  -l memory.max limit%
 *
 * A program passes ORCH_VM_OPTS followed by its own letters to getopt(),
 * offers each option to orch_vm_opt() before its own switch, and calls
 * orch_vm_opts_mode() after the loop.  Its help text uses the ORCH_HELP_*
 * lines, so the shared options read the same in every program.
 */
#ifndef ORCH_OPTS_H
#define ORCH_OPTS_H

#include "orch_vm.h"

#define ORCH_STR_(x) #x
#define ORCH_STR(x) ORCH_STR_(x)

/* getopt() letters of the shared options ("h": help). */
#define ORCH_VM_OPTS "hm:v:b:w:l:"

#define ORCH_HELP_M " -m: guest mode ID (default: the library's default, 4K pages)\n"
#define ORCH_HELP_V " -v: inner vCPUs (default 1)\n"
#define ORCH_HELP_B " -b: memory per vCPU, e.g. 64M (default 64M)\n"
#define ORCH_HELP_W " -w: percentage of writes in a pass (default 100)\n"
/* The -l default differs per program: pass the same macro as to ORCH_VM_OPTS_INIT. */
#define ORCH_HELP_L(default_pct) \
	" -l: memory.max as a percentage of memory.current after populating; 0: no limit (default " \
	ORCH_STR(default_pct) ")\n"

struct orch_vm_opts {
	int mode_arg;		/* -m; -1: the library's default mode */
	int nr_vcpus;		/* -v */
	uint64_t vcpu_bytes;	/* -b */
	int write_percent;	/* -w */
	int limit_pct;		/* -l; 0: no memory.max */
};

/* The defaults; -l's is the program's (the same macro as to ORCH_HELP_L). */
#define ORCH_VM_OPTS_INIT(default_pct) \
	{ .mode_arg = -1, .nr_vcpus = 1, .vcpu_bytes = 64ULL << 20, .write_percent = 100, .limit_pct = (default_pct) }

/* Take one getopt() result if it is a shared option; false: the caller's own. */
static inline bool orch_vm_opt(struct orch_vm_opts *o, int opt, const char *arg)
{
	switch (opt) {
	case 'm':
		o->mode_arg = atoi_non_negative("Guest mode ID", arg);
		return true;
	case 'v':
		o->nr_vcpus = atoi_positive("Number of vCPUs", arg);
		return true;
	case 'b':
		o->vcpu_bytes = parse_size(arg);
		return true;
	case 'w':
		o->write_percent = atoi_non_negative("Write percentage", arg);
		return true;
	case 'l':
		o->limit_pct = atoi_non_negative("Limit percentage", arg);
		return true;
	}
	return false;
}

/* Check the shared options once parsing is done; the guest mode to use. */
static inline enum vm_guest_mode orch_vm_opts_mode(const struct orch_vm_opts *o)
{
	/* Named as the programs' own variables were: a failed assertion prints its condition. */
	int mode_arg = o->mode_arg, nr_vcpus = o->nr_vcpus, write_percent = o->write_percent, limit_pct = o->limit_pct;
	enum vm_guest_mode mode = mode_arg < 0 ? VM_MODE_DEFAULT : (enum vm_guest_mode)mode_arg;

	TEST_ASSERT(mode < NUM_VM_MODES && guest_modes[mode].supported, "guest mode %d not supported (see -h)", mode_arg);
	TEST_ASSERT(nr_vcpus <= KVM_MAX_VCPUS, "at most %d vCPUs", KVM_MAX_VCPUS);
	TEST_ASSERT(write_percent <= 100 && limit_pct <= 100, "-w and -l take 0..100");
	return mode;
}

#endif /* ORCH_OPTS_H */
