"""The send buffer against a plain bytes model: any mix of appends,
acknowledgments and views gives the same bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.sendbuf import SendBuffer

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 100_000)),
    st.tuples(st.just("consume"), st.integers(0, 120_000)),
    st.tuples(st.just("view"), st.integers(0, 120_000), st.integers(0, 70_000)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_the_buffer_holds_what_a_bytes_model_holds(ops):
    buf, model, serial = SendBuffer(), b"", 0
    for op in ops:
        if op[0] == "append":
            data = bytes((serial + i) & 0xFF for i in range(op[1]))
            serial += op[1]
            buf.append(data)
            model += data
        elif op[0] == "consume":
            n = min(op[1], len(model))
            buf.consume(n)
            model = model[n:]
        else:
            off = min(op[1], len(model))
            assert bytes(buf.view(off, op[2])) == model[off:off + op[2]]
        assert len(buf) == len(model) and bool(buf) == bool(model)
