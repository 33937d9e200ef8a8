"""The harness's state builders: each reaches its state by the path the RFC draws.

A builder drives the layer through its public API only (connect, listen,
segments fed by the test, close) and asserts the state it reached; these
tests check the path it took (the trace's state events) and where the two
sequence spaces stand (``status()``), so a builder that silently took a
different road would show here first.
"""

from __future__ import annotations

import pytest

from tests.helpers.tcp import IRS, ISS, Conversation, to_state

OPEN = [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]

# builder: (state events, in order; snd_una, snd_nxt, rcv_nxt as offsets from ISS and IRS)
PATHS = {
    "syn_sent": ([("CLOSED", "SYN_SENT")], (0, 1, None)),
    "syn_received": ([("CLOSED", "SYN_SENT"), ("SYN_SENT", "SYN_RECEIVED")], (0, 1, 1)),
    "established": (OPEN, (1, 1, 1)),
    "fin_wait_1": (OPEN + [("ESTABLISHED", "FIN_WAIT_1")], (1, 2, 1)),
    "fin_wait_2": (OPEN + [("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "FIN_WAIT_2")],
                   (2, 2, 1)),
    "close_wait": (OPEN + [("ESTABLISHED", "CLOSE_WAIT")], (1, 1, 2)),
    "closing": (OPEN + [("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "CLOSING")], (1, 2, 2)),
    "last_ack": (OPEN + [("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK")], (1, 2, 2)),
    "time_wait": (OPEN + [("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "FIN_WAIT_2"),
                          ("FIN_WAIT_2", "TIME_WAIT")], (2, 2, 2)),
}


@pytest.mark.parametrize("builder", list(PATHS))
def test_builder_reaches_its_state_by_the_expected_path(builder):
    c = Conversation()
    conn = getattr(c, builder)()
    state = builder.upper()
    assert conn is c.conn and conn.state == state
    path, (una, nxt, rcv) = PATHS[builder]
    assert c.states(conn.name) == path
    st = conn.status()
    assert st["state"] == state
    assert (st["snd_una"], st["snd_nxt"]) == (ISS + una, ISS + nxt)
    if rcv is not None:
        assert st["rcv_nxt"] == IRS + rcv
    assert c.layer.connections() == [conn]
    c.expect_nothing()          # a builder leaves nothing unchecked behind it


def test_passive_established_goes_through_the_listener():
    c = Conversation()
    conn = c.established(passive=True)
    assert conn.state == "ESTABLISHED" and c.listener is not None
    assert c.states() == [("CLOSED", "LISTEN"), ("LISTEN", "SYN_RECEIVED"),
                          ("SYN_RECEIVED", "ESTABLISHED")]
    assert c.states(conn.name) == [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED")]
    st = conn.status()
    assert (st["snd_una"], st["snd_nxt"], st["rcv_nxt"]) == (ISS + 1, ISS + 1, IRS + 1)


@pytest.mark.parametrize("builder", list(PATHS))
def test_to_state_runs_the_builder_of_that_name(builder):
    c = to_state(builder.upper())
    assert c.conn.status()["state"] == builder.upper()
    assert c.states(c.conn.name) == PATHS[builder][0]


def test_an_unknown_state_has_no_builder():
    with pytest.raises(AttributeError):
        Conversation().to("SYN_SENT_TWICE")
