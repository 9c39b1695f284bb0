"""Numbers as the reports print them: 3-4 significant digits, K/M for large counts."""
from __future__ import annotations


def fmt(v: float, unit: str = "", digits: int = 4) -> str:
    if abs(v) >= 1e6:
        text = f"{v / 1e6:.{digits - 1}g} M"
    elif abs(v) >= 1e4:
        text = f"{v / 1e3:.{digits}g} K"
    else:
        text = f"{v:.{digits}g}"
    return f"{text} {unit}".rstrip() if unit else text
