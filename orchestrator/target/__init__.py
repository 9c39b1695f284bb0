"""The execution target: where a cell's guest work runs.  A cell's guest work
is data (job.GuestJob: the kernel, files for the initramfs, ordered scripts);
a target (base.Target: the local QEMU, a LAVA lab) runs it and hands back a
job.GuestOutcome (boot record, one result per script, evidence files, a typed
fault).  Targets are chosen by name from targets/*.yaml."""
