"""Numbers for people: three significant digits in text (the CLI, the incident report, the
console: one rule, `engine.sig`), counts whole and grouped; JSON keeps full precision."""

from __future__ import annotations

import math

import pytest

from engine import sig


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.8208333333333333, "0.821"),
        (3.4166, "3.42"),
        (41.234, "41.2"),
        (99.96, "100"),  # rounding carries into the next power of ten
        (0.9996, "1.00"),
        (9.996, "10.0"),
        (1653, "1,653"),  # counts stay whole, grouped
        (5, "5"),
        (5.0, "5.00"),  # a measured figure keeps its digits
        (math.inf, "inf"),
        (1234567.8, "1,234,568"),
        (-2.345, "-2.35"),
        (0.05, "0.0500"),
        (0.00012345, "0.000123"),
        (0.0000012, "1.20e-06"),
        (0, "0"),
        (None, "-"),
        (float("nan"), "-"),
    ],
)
def test_sig_rounds_to_three_significant_digits(value: float | None, shown: str) -> None:
    assert sig(value) == shown
