"""stack: a userspace TCP/IP stack that speaks Ethernet on a Linux TAP device.

    import stack
    with stack.Stack.tap("tap1", address="198.51.100.2/24",
                         host_address="198.51.100.1/24") as net:
        with net.create_connection(("198.51.100.1", 8000), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(s.recv(4096))
"""

from stack.dropin import patch, unpatch
from stack.native import IMPL as NATIVE_IMPL
from stack.runtime import Stack
from stack.socket import (
    AF_INET, IPPROTO_TCP, IPPROTO_UDP, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_BROADCAST, SO_ERROR,
    SO_KEEPALIVE, SO_LINGER, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, SOCK_DGRAM, SOCK_STREAM,
    SOL_SOCKET, SOMAXCONN, TCP_CONGESTION, TCP_NODELAY, Socket,
)
from stack.trace import Trace

__version__ = "0.1.0"

__all__ = [
    "AF_INET", "IPPROTO_TCP", "IPPROTO_UDP", "NATIVE_IMPL", "SHUT_RD", "SHUT_RDWR", "SHUT_WR",
    "SOCK_DGRAM", "SOCK_STREAM", "SOL_SOCKET", "SOMAXCONN", "SO_BROADCAST", "SO_ERROR",
    "SO_KEEPALIVE", "SO_LINGER", "SO_RCVBUF", "SO_REUSEADDR", "SO_SNDBUF", "Socket", "Stack",
    "TCP_CONGESTION", "TCP_NODELAY", "Trace", "patch", "unpatch",
]
