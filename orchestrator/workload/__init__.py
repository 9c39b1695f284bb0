"""Workload stage: workload definitions, tracepoint sets, timed cells, running a workload with its collectors."""
