"""How a run is carried out (./run-matrix options), shared by the scheduler and the cell runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOptions:
    results_dir: Path
    matrix_arg: str
    kcidb_origin: str | None = None  # --kcidb-origin ORIGIN[:ID_PREFIX]
    resume: bool = False
    jobs: int = 1
    boot_silence_s: float = 120.0
    boot_overall_s: float = 600.0
    ssh_timeout_s: float = 60.0
    target: str = "local"  # targets/NAME.yaml: where the cells' guests run (--target, the matrix's `target:`)


def default_jobs() -> int:
    """Each TCG guest keeps ~2 host threads busy and needs ~5 GB: one cell per 2 cores / 5 GB."""
    cores = os.cpu_count() or 2
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 8
    return max(1, min(cores // 2, int(mem_gb // 5)))
