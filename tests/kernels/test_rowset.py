"""Sorting row sets by bitmap agrees with NumPy's sort, on any set, size and order."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.kernels.rowset import ascending, bitmap_sort, count_live


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(1, 5000), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_bitmap_sort_matches_numpy(n_rows, fraction, seed):
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n_rows)[: int(fraction * n_rows)]
    expected = np.sort(rows)
    assert np.array_equal(bitmap_sort(rows.astype(np.int64), n_rows, np.zeros(0, np.uint8)), expected)
    live = rng.integers(0, 2, n_rows).astype(np.uint8)
    assert np.array_equal(ascending(rows, n_rows, live), expected[live[expected] != 0])
    assert count_live(rows, live) == np.count_nonzero(live[rows])
    out = ascending(rows.astype(np.int32), n_rows)
    assert out.dtype == np.int64 and np.array_equal(out, expected)


def test_bitmap_sort_drops_repeats_and_rejects_rows_out_of_range():
    every = np.zeros(0, np.uint8)
    assert bitmap_sort(np.array([5, 3, 5, 64, 0]), 65, every).tolist() == [0, 3, 5, 64]
    with pytest.raises(ValueError, match="out of range"):
        bitmap_sort(np.array([3, 65]), 65, every)
    with pytest.raises(ValueError, match="out of range"):
        bitmap_sort(np.array([-1]), 65, every)


def test_ascending_takes_the_bitmap_for_large_sets_and_numpy_for_small_ones():
    n_rows = 1 << 20
    rows = np.random.default_rng(0).permutation(n_rows)[:5000]  # >= n_rows / BITMAP_DIVISOR: bitmap
    assert np.array_equal(ascending(rows, n_rows), np.sort(rows))
    assert np.array_equal(ascending(rows[:100], n_rows), np.sort(rows[:100]))  # NumPy
    live = np.zeros(n_rows, np.uint8)
    live[rows[::2]] = 1
    for part in (rows, rows[:100]):
        assert np.array_equal(ascending(part, n_rows, live), np.sort(part[live[part] != 0]))
