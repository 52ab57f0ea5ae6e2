"""Durations written as a number and a unit ("250us", "100ms", "1s", "5m", "1h"): book snapshot
intervals, FeatureSet intervals and windows. Kept exact (as fractions of a second) so that "is this
window a whole number of intervals" has one answer."""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {
    "us": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(us|ms|s|m|h)\s*$"


def parse_duration(text: str) -> Fraction:
    """Seconds in `text`, exactly: a positive number followed by us, ms, s, m or h."""
    match = _DURATION.match(text)
    value = Fraction(match.group(1)) * _UNITS[match.group(2)] if match else Fraction(0)
    if value <= 0:
        raise ValueError(
            f"invalid interval {text!r}: expected a positive number followed by a unit, "
            "one of us, ms, s, m, h (e.g. 250us, 100ms, 1s, 5m, 1h)"
        )
    return value


def parse_interval(text: str) -> float:
    """Seconds in an interval such as "100ms" (0.1). Via Fraction, so "100ms" is the double
    nearest 0.1 rather than 100 * 0.001."""
    return float(parse_duration(text))
