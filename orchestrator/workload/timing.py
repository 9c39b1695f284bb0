"""What a timed cell may arm, and the host facts every timing claim carries.

A timing claim comes from a config set listed under `timed:` in
kernel_configs/sets.yaml (the `timing` set: no LOCKDEP, LOCK_STAT or probes).
In such a cell nothing is armed while the workload runs: no tracepoint, no
kprobe, no lock_stat reset.  The lock and call-count evidence comes from the
`evidence` cells run beside it (orchestrator/reports/aging.py pairs them).
"""
from __future__ import annotations

import os

from orchestrator.errors import did_you_mean
from orchestrator.kernel.kconfig import load_sets_file

# Above this 1-minute load average per host core the host counts as loaded:
# TCG vCPU threads then compete with other work for the same cores.
LOADED_PER_CORE = 1.0


def timed_config_sets() -> frozenset[str]:
    """The `timed:` list of sets.yaml; a name that is no set is an error (a typo
    would otherwise arm the probes in the very cells meant to be timed)."""
    doc = load_sets_file()
    sets = doc.data["sets"]
    for i, name in enumerate(doc.data["timed"]):
        if name not in sets:
            raise doc.error(("timed", i), f"no config set {name!r}{did_you_mean(name, sets)}",
                            hint=f"name one of the sets in {doc.path}: {', '.join(sorted(sets))}")
    return frozenset(doc.data["timed"])


def is_timed(config_set: str) -> bool:
    return config_set in timed_config_sets()


def host_load(prefix: str) -> dict[str, float]:
    """The host's load averages as metrics `host.<prefix>_load1` ... (none where unsupported)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {}
    return {f"host.{prefix}_load1": round(one, 2), f"host.{prefix}_load5": round(five, 2),
            f"host.{prefix}_load15": round(fifteen, 2)}


def host_facts() -> dict[str, float]:
    return {"host.cores": float(os.cpu_count() or 0)}


def loaded(metrics: dict[str, float]) -> bool:
    """Whether the host was loaded at either end of the cell (see LOADED_PER_CORE)."""
    cores = metrics.get("host.cores") or 1.0
    worst = max(metrics.get("host.before_load1", 0.0), metrics.get("host.after_load1", 0.0))
    return worst > LOADED_PER_CORE * cores
