"""Sequence-number arithmetic modulo 2**32 (stack/tcp/seq.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.seq import (seq_add, seq_diff, seq_ge, seq_gt, seq_in, seq_le, seq_lt, seq_max,
                           seq_min)


# ---- sequence numbers ------------------------------------------------------------


def test_sequence_comparisons_wrap():
    top = 2**32 - 10
    assert seq_lt(top, 5) and seq_gt(5, top) and seq_le(top, top) and seq_ge(5, top)
    assert not seq_lt(5, top) and not seq_gt(top, 5)
    assert seq_add(top, 20) == 10 and seq_add(3, -5) == 2**32 - 2
    assert seq_diff(10, top) == 20 and seq_diff(top, 10) == -20
    assert seq_in(2, top, 20) and not seq_in(10, top, 20) and seq_in(top, top, 1)
    assert not seq_in(top, top, 0)
    assert seq_max(top, 5) == 5 and seq_min(top, 5) == top


@given(a=st.integers(0, 2**32 - 1), d=st.integers(1, 2**31 - 1))
def test_sequence_order_property(a, d):
    b = seq_add(a, d)
    assert seq_lt(a, b) and seq_gt(b, a) and seq_diff(b, a) == d and seq_diff(a, b) == -d
    assert not seq_lt(b, a) and seq_le(a, b) and not seq_ge(a, b)
