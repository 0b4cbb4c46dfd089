"""Formatting shared by the report's pages, and writing tables and pages whole or not at all."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from advseg.jobs import atomic_path


def row(cells) -> str:
    """One table row; a "|" inside a cell (as in |ρ|) is escaped so it does not split the cell."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def rule(aligns: str) -> str:
    """A header rule from one letter per column: l (left) or r (right)."""
    return "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|"


def num(value: float, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def p_value(value: float) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.2g}"


def interval(effect: float, low: float, high: float, signed: bool = True) -> str:
    """'+0.012 [-0.004, +0.030]'; an unbounded end prints as ±∞, a missing interval as the effect alone."""
    if pd.isna(effect):
        return "–"
    spec = "+.3f" if signed else ".3f"

    def end(value):
        return "–" if pd.isna(value) else ("−∞" if value == -math.inf else "+∞" if value == math.inf
                                           else format(value, spec))
    if pd.isna(low) and pd.isna(high):
        return format(effect, spec)
    return f"{format(effect, spec)} [{end(low)}, {end(high)}]"


def bold_if(text: str, condition: bool) -> str:
    return f"**{text}**" if condition else text


def format_params(params: float) -> str:
    """Parameter count in millions, e.g. 14328883 -> '14.3M'."""
    return f"{params / 1e6:.1f}M"


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Six significant digits: more than any interval here can resolve."""
    with atomic_path(path) as temporary:
        df.to_csv(temporary, index=False, float_format="%.6g")


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
