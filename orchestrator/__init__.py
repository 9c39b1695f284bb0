"""arm64 kernel test orchestrator.

One sub-package per pipeline stage (docs/architecture.md):
kernel (source -> series -> config -> build, guest programs) -> vm (image,
QEMU, console/SSH, nested-KVM check) -> workload (run with collectors) ->
parsers (pure) -> judge (verdicts) -> reports; matrix runs cells through them.
"""
