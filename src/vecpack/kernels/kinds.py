"""The kinds of probe (``codecs.base.Probe``): how one code row is scored against one query (``probe.score_row``).

Each kind's row layout and score formula is documented in ``kernels.probe`` and implemented by one
``score_<kind>_row`` function next to the kind's encoder. Kernels receive a kind as
``kind_token(kind)``, a tuple whose *length* is the kind: numba then compiles one specialisation per
kind, LLVM folds the dispatch away and the scoring loop vectorises (measured: 2x faster than a
runtime kind).
"""

from __future__ import annotations

AFFINE_IP = 0
AFFINE_L2 = 1
BITS = 2
LUT = 3
LVQ = 4
NIBBLE_AFFINE = 5
LVQ_FULL = 6
RABITQ = 7
RABITQ_EX = 8
RBIN = 9
LUT4 = 10


def kind_token(kind: int) -> tuple[int, ...]:
    """The kind as a compile-time constant for the kernels: a tuple of that length."""
    return (0,) * kind
