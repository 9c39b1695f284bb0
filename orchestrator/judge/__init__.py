"""Judgement: verdicts on a workload run and the expectations they check."""
