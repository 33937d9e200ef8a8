"""Undoing a window cut that only a spurious retransmission caused, as
Linux's ``tcp_try_undo_*`` do.

A loss episode (fast recovery, or an RTO) saves the window it cut. Two
signs say the retransmissions were not needed, that the path reordered or
delayed the segments instead of losing them:

* D-SACK (RFC 2883, RFC 3708): the receiver reports each retransmitted
  byte as a duplicate. When the duplicates cover every byte retransmitted
  in the episode, nothing was lost.
* Eifel detection (RFC 3522), with timestamps: the ACK that first covers
  the retransmitted data echoes a timestamp older than the first
  retransmission, so it answers the original.

Either way the window and ssthresh go back to what they were (the larger
of those and the present ones), and CUBIC starts a new epoch from there.
"""

from __future__ import annotations

from stack.tcp.seq import seq_add, seq_gt


class Undo:
    """One loss episode's record (:class:`~stack.tcp.recovery.Recovery` keeps it)."""

    __slots__ = ("first_seq", "first_ts", "high", "retrans", "ssthresh", "tested", "window")

    def __init__(self, cwnd: int, ssthresh: int) -> None:
        self.window = cwnd            # the window before the cut
        self.ssthresh = ssthresh
        self.retrans = 0              # bytes retransmitted, less those D-SACKed since
        self.first_seq: int | None = None   # the first retransmission's sequence number
        self.first_ts = 0                   # ... and the TSval it carried
        self.high = 0                 # the end of the highest byte retransmitted
        self.tested = False           # Eifel's test was made (on the first ACK past first_seq)

    def retransmitted(self, seq: int, n: int, ts: int) -> None:
        end = seq_add(seq, n)
        if self.first_seq is None:
            self.first_seq = seq
            self.first_ts = ts
            self.high = end
        elif seq_gt(end, self.high):
            self.high = end
        self.retrans += n

    def dsacked(self, n: int) -> bool:
        """A D-SACK reported ``n`` duplicate bytes: True once they cover
        every retransmission of the episode."""
        if self.first_seq is None:
            return False
        self.retrans -= n
        return self.retrans <= 0
