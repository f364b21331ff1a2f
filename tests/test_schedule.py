import math

import pytest

from flickerless.blend.schedule import count_table_remaps, lowbit_level, table_levels, table_query, window_pairs


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33, 100])
@pytest.mark.parametrize("w", [0, 1, 3, 15, None])
def test_table_query_covers_window_exactly(n, w):
    K = table_levels(n, w)
    for i in range(1, n + 1):
        covered = []
        blocks = table_query(i, w, K)
        assert blocks[0][1] == i  # the first block ends at i: no remap
        for k, c in blocks:
            assert k <= K and k <= lowbit_level(c)
            covered += list(range(c - 2**k + 1, c + 1))
        lo = 1 if w is None else max(1, i - w)
        assert sorted(covered) == list(range(lo, i + 1))
        assert len(blocks) <= 2 * (K + 1)


@pytest.mark.parametrize("first", [1, 6, 17])
@pytest.mark.parametrize("w", [3, 15, None])
def test_table_query_from_a_later_first_position(first, w):
    """Positions counted in a longer sequence: the blocks cover exactly [max(first, i - w), i], and
    where the window does not reach ``first`` they are the blocks of the sequence counted from 1."""
    K = 4
    for i in range(first, first + 40):
        covered = sum((list(range(c - 2**k + 1, c + 1)) for k, c in table_query(i, w, K, first)), [])
        lo = first if w is None else max(first, i - w)
        assert sorted(covered) == list(range(lo, i + 1))
        if w is not None and i - w >= first:
            assert table_query(i, w, K, first) == table_query(i, w, K)


def test_table_is_n_log_n_and_beats_window():
    for n in (64, 256, 1024):
        full = count_table_remaps(n, None)
        assert full <= 2 * n * (math.log2(n) + 1)
        assert len(window_pairs(n, None)) == n * (n - 1)
    assert count_table_remaps(120, 15) < len(window_pairs(120, 15)) / 3
