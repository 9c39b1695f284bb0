/*
 * kvm_probe: does KVM work inside this guest (nested virtualization)?
 *
 * One line per step, "KVM-PROBE <step> ok ..." or "KVM-PROBE <step> FAIL ...",
 * then "KVM-PROBE result ok" and exit 0, or exit 1 at the first failure.
 * Steps: open /dev/kvm, KVM_GET_API_VERSION, KVM_CREATE_VM, a 64 KiB memslot,
 * KVM_CREATE_VCPU, KVM_ARM_VCPU_INIT, and KVM_RUN of four instructions that
 * store 0x2a to an address outside the memslot: the vCPU must leave with
 * KVM_EXIT_MMIO at that address, which proves guest code really ran at EL1
 * under the nested hypervisor.  Parsed by orchestrator/vm/nested_kvm.py.
 *
 * Built with: aarch64-linux-gnu-gcc -static -O2 -o kvm_probe kvm_probe.c
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUEST_CODE_GPA 0x10000UL
#define GUEST_MEM_SIZE 0x10000UL
#define MMIO_GPA 0x10000000UL

static void fail(const char *step)
{
	printf("KVM-PROBE %s FAIL errno=%d (%s)\n", step, errno, strerror(errno));
	exit(1);
}

int main(void)
{
	static const uint32_t code[] = {
		0xd2a20001, /* movz x1, #0x1000, lsl #16   x1 = MMIO_GPA */
		0xd2800540, /* movz x0, #0x2a */
		0xf9000020, /* str  x0, [x1]                -> KVM_EXIT_MMIO */
		0x14000000, /* b    .                       (not reached) */
	};
	struct kvm_vcpu_init init;
	struct kvm_userspace_memory_region region;
	struct kvm_one_reg reg;
	struct kvm_run *run;
	uint64_t pc = GUEST_CODE_GPA;
	int kvm, vm, vcpu, version, run_size;
	void *mem;

	setvbuf(stdout, NULL, _IOLBF, 0);

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		fail("open");
	printf("KVM-PROBE open ok\n");

	version = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (version < 0)
		fail("api-version");
	printf("KVM-PROBE api-version ok version=%d\n", version);

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		fail("create-vm");
	printf("KVM-PROBE create-vm ok\n");

	mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		fail("mmap");
	memcpy(mem, code, sizeof(code));
	memset(&region, 0, sizeof(region));
	region.slot = 0;
	region.guest_phys_addr = GUEST_CODE_GPA;
	region.memory_size = GUEST_MEM_SIZE;
	region.userspace_addr = (uintptr_t)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		fail("memslot");
	printf("KVM-PROBE memslot ok\n");

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		fail("create-vcpu");
	printf("KVM-PROBE create-vcpu ok\n");

	memset(&init, 0, sizeof(init));
	if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0)
		fail("preferred-target");
	if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0)
		fail("vcpu-init");
	printf("KVM-PROBE vcpu-init ok target=%u\n", init.target);

	reg.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
		 KVM_REG_ARM_CORE_REG(regs.pc);
	reg.addr = (uintptr_t)&pc;
	if (ioctl(vcpu, KVM_SET_ONE_REG, &reg) < 0)
		fail("set-pc");

	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		fail("mmap-size");
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		fail("mmap-run");
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		fail("run");
	if (run->exit_reason != KVM_EXIT_MMIO || run->mmio.phys_addr != MMIO_GPA ||
	    !run->mmio.is_write || run->mmio.data[0] != 0x2a) {
		printf("KVM-PROBE run FAIL exit_reason=%u phys_addr=0x%llx\n",
		       run->exit_reason, (unsigned long long)run->mmio.phys_addr);
		return 1;
	}
	printf("KVM-PROBE run ok exit=mmio addr=0x%llx\n",
	       (unsigned long long)run->mmio.phys_addr);
	printf("KVM-PROBE result ok\n");
	return 0;
}
