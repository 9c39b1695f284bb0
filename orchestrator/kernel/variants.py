"""Named series variants (patches/variants.yaml): a name -> patches applied in order."""
from __future__ import annotations

from pathlib import Path

from orchestrator import datafiles
from orchestrator.errors import UserError, did_you_mean
from orchestrator.kernel.series import Series, load_series

VARIANTS_FILE = "variants.yaml"


class _VariantsWording(datafiles.Wording):
    """`variants.v4: must be a list of patch file names`, as variants files always said."""

    def wrong_type(self, at: datafiles.KeyPath, got: str, expected: str) -> str:
        return self.say(at, f"must be {expected}, got {got}")


VARIANTS_SCHEMA = datafiles.Mapping({
    "variants": datafiles.Field(
        datafiles.MapOf(datafiles.List(datafiles.Str(), expected="a list of patch file names"),
                        expected="a mapping {name: [patch, ...]}"),
        required=True, help="name: [patch, ...], applied in order"),
}, expected="a mapping `variants: {name: [patch, ...]}`")


def load_variants(series_dir: Path) -> dict[str, list[str]]:
    path = series_dir / VARIANTS_FILE
    if not path.is_file():
        return {}
    doc = datafiles.load(path, VARIANTS_SCHEMA, what="variants", wording=_VariantsWording())
    variants: dict[str, list[str]] = doc.data["variants"]
    for name, patches in variants.items():
        missing = [p for p in patches if not (series_dir / p).is_file()]
        if missing:
            raise doc.error(("variants", name), f"lists missing patch(es): {', '.join(missing)}",
                            hint=f"patch files are named relative to {series_dir}")
    return variants


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
