"""The congestion controls by name: what ``TcpConfig.congestion``,
``TCP_CONGESTION`` and ``stack up --congestion`` choose from."""

from __future__ import annotations

from stack.tcp.bbr import Bbr
from stack.tcp.congestion import CongestionControl, Cubic, NewReno, Reno

ALGORITHMS: dict[str, type[CongestionControl]] = {
    "reno": Reno, "newreno": NewReno, "cubic": Cubic, "bbr": Bbr}
