"""Judgement: steps and their statuses, verdicts on a workload run and the expectations they check."""
