"""What an ICMP error means to a socket, as Linux maps it: one table.

Linux's ``icmp_err_convert`` (net/ipv4/icmp.c) gives each destination
unreachable code an errno and says whether it is *fatal* (a hard error);
``tcp_v4_err`` and ``__udp4_lib_err`` add time exceeded (EHOSTUNREACH, soft)
and parameter problem (EPROTO, hard). What the transports do with them:

- TCP, a half-open passive connection (SYN_RECEIVED from a listener): net
  or host unreachable, time exceeded and parameter problem drop it
  (``tcp_req_err``, counted as ``tcp.listen_drops``); the others are ignored.
- TCP in SYN_SENT: any of them (but "fragmentation needed", which is path
  MTU discovery) aborts the connect at once with the errno, fatal or not.
  An established connection keeps it as its soft error, which a timeout
  reports instead of ETIMEDOUT (RFC 1122 4.2.3.9 lets only protocol and port
  unreachable be hard; Linux treats none as hard without IP_RECVERR).
- UDP: a connected socket gets the errno on its next call only when the
  error is hard (:attr:`IcmpError.udp_hard`); soft ones are not reported
  (no IP_RECVERR); an unconnected socket never hears of either.

A destination unreachable code above 15 is none of these: Linux ignores it,
and so does the ICMP layer (dropped and counted).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IcmpError:
    """One row: ``kind`` (the name traces and transports use), its errno,
    and whether Linux calls it fatal."""

    kind: str
    errno: int
    fatal: bool

    @property
    def udp_hard(self) -> bool:
        """Does a connected UDP socket hear of it (``harderr`` in udp_err)?
        The fatal ones, and "fragmentation needed" (EMSGSIZE: a UDP socket's
        default IP_PMTUDISC_WANT is not IP_PMTUDISC_DONT)."""
        return self.fatal or self.kind == "frag_needed"


# Destination unreachable, by code (RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1).
UNREACHABLE: tuple[IcmpError, ...] = (
    IcmpError("net_unreachable", errno.ENETUNREACH, False),            # 0
    IcmpError("host_unreachable", errno.EHOSTUNREACH, False),          # 1
    IcmpError("protocol_unreachable", errno.ENOPROTOOPT, True),        # 2
    IcmpError("port_unreachable", errno.ECONNREFUSED, True),           # 3
    IcmpError("frag_needed", errno.EMSGSIZE, False),                   # 4
    IcmpError("source_route_failed", errno.EOPNOTSUPP, False),         # 5
    IcmpError("net_unknown", errno.ENETUNREACH, True),                 # 6
    IcmpError("host_unknown", errno.EHOSTDOWN, True),                  # 7
    IcmpError("host_isolated", errno.ENONET, True),                    # 8
    IcmpError("net_prohibited", errno.ENETUNREACH, True),              # 9
    IcmpError("host_prohibited", errno.EHOSTUNREACH, True),            # 10
    IcmpError("net_tos_unreachable", errno.ENETUNREACH, False),        # 11
    IcmpError("host_tos_unreachable", errno.EHOSTUNREACH, False),      # 12
    IcmpError("admin_prohibited", errno.EHOSTUNREACH, True),           # 13 (nft reject ... admin-prohibited)
    IcmpError("host_precedence_violation", errno.EHOSTUNREACH, True),  # 14
    IcmpError("precedence_cutoff", errno.EHOSTUNREACH, True),          # 15
)
TIME_EXCEEDED = IcmpError("time_exceeded", errno.EHOSTUNREACH, False)
PARAMETER_PROBLEM = IcmpError("parameter_problem", errno.EPROTO, True)

BY_KIND: dict[str, IcmpError] = {e.kind: e for e in (*UNREACHABLE, TIME_EXCEEDED, PARAMETER_PROBLEM)}

_DEST_UNREACHABLE, _TIME_EXCEEDED, _PARAMETER_PROBLEM = 3, 11, 12


def classify(type_: int, code: int) -> IcmpError | None:
    """The row for an ICMP error of ``type_``/``code``; None for one no
    socket hears of (an unknown unreachable code, another type)."""
    if type_ == _DEST_UNREACHABLE:
        return UNREACHABLE[code] if code < len(UNREACHABLE) else None
    if type_ == _TIME_EXCEEDED:
        return TIME_EXCEEDED
    if type_ == _PARAMETER_PROBLEM:
        return PARAMETER_PROBLEM
    return None


def errno_for(kind: str) -> int:
    """The errno of ``kind`` (a name from the table)."""
    return BY_KIND[kind].errno
