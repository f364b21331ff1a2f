"""Pair schedules: which remaps a deflicker mode needs, as plain data (no tensors).

A remap job ``(src, tgt)`` means "match guide frame ``src`` to guide frame ``tgt`` and remap some
image living at ``src`` onto ``tgt``". Schedules are pure functions of (n, window, ...), so their
cost (number of PatchMatch runs) can be counted and tested without running anything.

The remapping table (DiffSynth, Table 1 / eqs 8-12) is a Fenwick tree over the frame sequence:
the entry at column ``c`` (1-based) and level ``k`` (``c`` a multiple of ``2**k``) is the blend of
the ``2**k`` frames ``(c - 2**k, c]``, each remapped to ``c``. It is built level by level, one remap
per entry: ``B(k, c) = B(k-1, c - 2**(k-1))[c - 2**(k-1) -> c]  (+)  B(k-1, c)`` (eq 10). The blend of
frames ``[i - w, i]`` at ``i`` is then a sum of O(log w) entries, each remapped once to ``i``
(eq 11); running the same on the reversed sequence gives ``[i, i + w]`` (eq 12).
"""

from __future__ import annotations

import math

__all__ = ["lowbit_level", "table_levels", "table_entries", "table_query", "table_needed", "table_segments",
           "window_sources", "window_pairs", "count_table_remaps"]


def lowbit_level(c: int) -> int:
    """Largest k with ``2**k`` dividing ``c`` (c >= 1)."""
    return (c & -c).bit_length() - 1


def table_levels(n: int, window: int | None) -> int:
    """Highest table level needed: blocks never longer than the window span ``w + 1`` (or ``n``)."""
    span = n if window is None else min(n, window + 1)
    return max(0, int(math.floor(math.log2(max(span, 1)))))


def table_entries(n: int, level: int) -> list[int]:
    """Columns (1-based) that hold an entry at ``level``."""
    step = 2**level
    return list(range(step, n + 1, step))


def table_query(i: int, window: int | None, max_level: int, first: int = 1) -> list[tuple[int, int]]:
    """Blocks ``(k, c)`` whose union is exactly the positions ``[max(first, i - w), i]`` (1-based;
    ``first``: the sequence's first position, where its positions are counted in a longer one).

    The first block always ends at ``c == i`` (no remap needed); every other block is remapped
    once, from ``c`` to ``i``.
    """
    lo = first if window is None else max(first, i - window)
    blocks = []
    c = i
    while c >= lo:
        k = min(lowbit_level(c), max_level)
        while c - 2**k < lo - 1:
            k -= 1
        blocks.append((k, c))
        c -= 2**k
    return blocks


def table_needed(first: int, last: int, window: int | None, max_level: int, start: int = 1) -> set[tuple[int, int]]:
    """The table entries ``(k, c)``, ``k >= 1``, that the queries of positions ``first..last`` read,
    with the entries those are built from: what a pass over those positions alone computes
    (``start``: the sequence's first position, as ``table_query``'s ``first``)."""
    needed = {kc for i in range(first, last + 1) for kc in table_query(i, window, max_level, start) if kc[0] >= 1}
    for k in range(max_level, 1, -1):
        for _, c in [kc for kc in needed if kc[0] == k]:
            needed.add((k - 1, c - 2 ** (k - 1)))
            needed.add((k - 1, c))
    return needed


def table_segments(n: int, segment: int | None) -> list[tuple[int, int]]:
    """Frames ``[s, e)`` whose backward blends are made (and kept) together: one range of the whole
    clip, or consecutive ranges of ``segment`` frames."""
    seg = n if not segment or segment >= n else segment
    return [(s, min(n, s + seg)) for s in range(0, n, seg)]


def count_table_remaps(n: int, window: int | None, segment: int | None = None, bases: tuple[int, int] = (0, 0)) -> int:
    """PatchMatch runs of ``table`` mode, both directions. ``segment``: the backward pass runs over
    ranges of that many frames (:func:`table_segments`), each computing the entries it reads afresh.
    ``bases``: where the forward and the backward pass's positions start (``_run_table``)."""
    if n <= 1:
        return 0
    K = table_levels(n, window)
    bf, bb = bases

    def one_pass(first, last, base):
        query = sum(len(table_query(i, window, K, base + 1)) - 1 for i in range(first, last + 1))
        return len(table_needed(first, last, window, K, base + 1)) + query

    segments = table_segments(n, segment if window is not None else None)
    return one_pass(bf + 1, bf + n, bf) + sum(one_pass(bb + n - e + 1, bb + n - s, bb) for s, e in segments)


def window_sources(i: int, n: int, window: int | None) -> list[int]:
    """Frames blended into frame ``i`` (0-based) by ``window`` mode, ``i`` itself excluded."""
    w = n if window is None else window
    return [j for j in range(max(0, i - w), min(n, i + w + 1)) if j != i]


def window_pairs(n: int, window: int | None) -> list[tuple[int, int]]:
    """All ``(src, tgt)`` with ``0 < |src - tgt| <= w`` (0-based), grouped by target."""
    return [(j, i) for i in range(n) for j in window_sources(i, n, window)]
