"""TCP (RFC 9293): sans-IO connections, listeners and the layer that owns them.

The runtime talks to :class:`TcpLayer` (``receive``, ``icmp_error``,
``next_deadline``, ``on_timer``, ``listen``, ``connect``, ``bind``) and to the
:class:`TcpConnection` and :class:`Listener` objects it returns.
"""

from stack.tcp.config import TcpConfig
from stack.tcp.conn import TcpConnection
from stack.tcp.layer import TcpLayer
from stack.tcp.listener import Listener
from stack.tcp.states import (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
                              LAST_ACK, LISTEN, SYN_RECEIVED, SYN_SENT, TIME_WAIT)

__all__ = [
    "TcpConfig", "TcpConnection", "TcpLayer", "Listener",
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
    "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT",
]
