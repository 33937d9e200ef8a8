"""Undoing a spurious window cut (undo.py), on a manual clock: the D-SACK
that reports a retransmission as a duplicate, and Eifel's timestamp test.

The stack sends ten segments at t = 0.1 (an RTT of 0.1 s); the peer
acknowledges. A path that reorders makes the first segment late: the
stack retransmits it and cuts its window; the peer's answers then show the
retransmission was not needed, and the cut is undone.
"""

from __future__ import annotations

from stack.tcp import TcpConfig

from tests.helpers.tcp import IRS
from tests.tcp.test_recovery import MSS, WIN, S, sender


def feed(c, ack, *blocks, ecr):
    c.feed(".", IRS + 1, ack, win=WIN, sack=tuple(blocks), timestamps=(2, ecr))
    return c.sent_segments()


def test_a_dsack_of_every_retransmission_undoes_the_cut():
    c = sender(TcpConfig(rack=False))
    first = c.conn.status()
    cwnd0, ss0 = first["cwnd"], first["ssthresh"]
    c.now = 0.2
    # Segment 0 is late: three SACKs above it start recovery and resend it.
    feed(c, S(0), (S(1), S(2)), ecr=100)
    feed(c, S(0), (S(1), S(3)), ecr=100)
    resent = feed(c, S(0), (S(1), S(4)), ecr=100)
    assert [(s.seq, len(s.payload)) for s in resent] == [(S(0), MSS)]
    st = c.conn.status()
    assert st["in_recovery"] and st["cwnd"] < cwnd0
    retrans_ts = resent[0].timestamps[0]
    # The retransmission arrives first (the ACK echoes it: no Eifel undo) ...
    c.now = 0.3
    feed(c, S(10), ecr=retrans_ts)
    st = c.conn.status()
    assert not st["in_recovery"] and st["cwnd"] < cwnd0
    # ... then the late original: the peer reports it as a duplicate.
    feed(c, S(10), (S(0), S(1)), ecr=retrans_ts)
    st = c.conn.status()
    assert st["cwnd"] == cwnd0 and st["ssthresh"] == ss0
    assert [e for e in c.events if e["event"] == "cwnd"][-1]["why"] == "undo"
    assert c.trace.counters["tcp.undo_dsack"] == 1


def test_a_dsack_of_data_from_before_the_episode_undoes_nothing():
    c = sender(TcpConfig(rack=False))
    c.now = 0.2
    feed(c, S(2), ecr=100)                     # segments 0 and 1 arrive
    feed(c, S(2), (S(3), S(4)), ecr=100)       # segment 2 is lost
    feed(c, S(2), (S(3), S(5)), ecr=100)
    resent = feed(c, S(2), (S(3), S(6)), ecr=100)
    assert [(s.seq, len(s.payload)) for s in resent][0] == (S(2), MSS)
    cut = c.conn.status()["cwnd"]
    c.now = 0.3
    feed(c, S(12), ecr=resent[0].timestamps[0])
    # A copy the network made of segment 0, sent once, before the episode.
    feed(c, S(12), (S(0), S(1)), ecr=resent[0].timestamps[0])
    assert c.conn.status()["cwnd"] <= cut + 2 * MSS   # grown by the ACKs, not restored
    assert not any(e.get("why") == "undo" for e in c.events if e["event"] == "cwnd")


def test_eifel_an_ack_echoing_the_original_undoes_a_spurious_rto():
    c = sender(TcpConfig(tlp=False))
    st = c.conn.status()
    cwnd0 = st["cwnd"]
    # No ACK for a whole RTO: the timer fires and sends segment 0 again.
    c.run_until(0.1 + st["rto"] + 0.001)
    resent = c.sent_segments()
    assert resent and resent[0].seq == S(0)
    assert c.conn.status()["cwnd"] == MSS
    # The ACKs were only late: the one that comes echoes the originals'
    # TSval (sent 300 ms before the retransmission).
    feed(c, S(10), ecr=resent[0].timestamps[0] - 300)
    st = c.conn.status()
    assert st["cwnd"] >= cwnd0, st["cwnd"]
    assert [e for e in c.events if e["event"] == "cwnd"][-1]["why"] == "undo"
    assert c.trace.counters["tcp.undo_eifel"] == 1


def test_a_real_loss_keeps_the_cut():
    c = sender(TcpConfig(tlp=False))
    cwnd0 = c.conn.status()["cwnd"]
    c.run_until(0.1 + c.conn.status()["rto"] + 0.001)
    resent = c.sent_segments()
    # The ACK echoes the retransmission: the original was lost.
    feed(c, S(1), ecr=resent[0].timestamps[0])
    assert c.conn.status()["cwnd"] < cwnd0
    assert not any(e.get("why") == "undo" for e in c.events if e["event"] == "cwnd")
