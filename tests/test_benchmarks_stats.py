"""benchmarks/stats.py: rates, quantiles, summaries and ratios on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import stats


def test_rates_divide_images_by_seconds():
  assert stats.rates([2.0, 0.5], 10) == [5.0, 20.0]
  with pytest.raises(ValueError):
    stats.rates([1.0, 0.0], 10)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 100.0],
                                    [0.3, 0.1, 0.7, 0.2, 0.9, 0.5]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_quantile_matches_numpy(values, q):
  assert stats.quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_summarize_fixed_input():
  s = stats.summarize([5.0, 1.0, 4.0, 2.0, 100.0])
  assert s == {"n": 5, "median": 4.0, "min": 1.0, "max": 100.0, "q1": 2.0, "q3": 5.0,
               "iqr": 3.0, "mean": 22.4, "spread_pct": pytest.approx(100 * 99 / 4)}
  assert stats.summarize([]) is None


def test_ratio_and_range():
  a = stats.summarize([8.0, 10.0, 12.0])
  b = stats.summarize([4.0, 5.0])
  assert stats.ratio(a, b) == pytest.approx(10.0 / 4.5)
  assert stats.ratio_range(a, b) == pytest.approx((8.0 / 5.0, 12.0 / 4.0))
  assert stats.ratio(a, None) is None and stats.ratio(None, b) is None


def test_format_rate():
  assert stats.format_rate(stats.summarize([14.0, 15.0, 16.0])) == "15.0 (14.0–16.0)"
  assert stats.format_rate(stats.summarize([240.0, 250.0])) == "245 (240–250)"
  assert stats.format_rate(None) == "—"
