"""arm64 kernel test orchestrator.

Pipeline: source -> series -> kconfig -> build -> guest image -> qemu ->
console/ssh -> workloads -> collectors -> parsers -> verdicts -> report.
"""
