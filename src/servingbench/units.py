"""Unit conversions used across the package (one place, so a figure is never off by a thousand)."""

from __future__ import annotations

__all__ = ["MS_PER_S", "US_PER_MS", "US_PER_S"]

US_PER_MS = 1000.0
MS_PER_S = 1000.0
US_PER_S = 1_000_000.0
