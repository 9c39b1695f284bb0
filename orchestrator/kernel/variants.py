"""Named series variants (patches/variants.yaml): a name -> patches applied in order."""
from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.errors import UserError, did_you_mean
from orchestrator.kernel.series import Series, load_series

VARIANTS_FILE = "variants.yaml"


def load_variants(series_dir: Path) -> dict[str, list[str]]:
    path = series_dir / VARIANTS_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict):
        raise UserError(f"{path}: expected a mapping `variants: {{name: [patch, ...]}}`")
    out: dict[str, list[str]] = {}
    for name, patches in variants.items():
        if not isinstance(patches, list) or not all(isinstance(p, str) for p in patches):
            raise UserError(f"{path}: variants.{name} must be a list of patch file names")
        missing = [p for p in patches if not (series_dir / p).is_file()]
        if missing:
            raise UserError(f"{path}: variants.{name} lists missing patch(es): {', '.join(missing)}")
        out[str(name)] = patches
    return out


def resolve(series_path: Path | None, variant: str | None) -> tuple[str, Series | None]:
    """(variant label, series to apply or None for none)."""
    if series_path is None:
        if variant not in (None, "baseline"):
            raise UserError(f"--variant {variant} needs --series (a directory with {VARIANTS_FILE})")
        return "baseline", None
    if not series_path.exists():
        raise UserError(f"series {series_path} does not exist", hint="give a patch directory, an mbox or a mail file")
    if variant is None:
        series = load_series(series_path)
        return series_path.name, series
    variants = load_variants(series_path) if series_path.is_dir() else {}
    if variant not in variants:
        where = series_path / VARIANTS_FILE
        known = ", ".join(sorted(variants)) or "none"
        raise UserError(f"unknown variant {variant!r} in {where}{did_you_mean(variant, variants)}",
                        hint=f"known variants: {known}")
    if not variants[variant]:
        return variant, None
    return variant, load_series(series_path, only=variants[variant])
