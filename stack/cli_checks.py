"""``stack up``'s checks across flags and against the system, and its start-up failures.

Everything here raises :class:`stack.cliargs.CliError` with a message that
names the flag (or resource) and the exit status SPEC gives it:

* 2, bad usage: a value that contradicts another flag (the host and stack
  addresses, the gateway, two services on one port) or names a path that
  must exist and does not (an http directory, the file ``stack trace`` reads);
* 1, a resource failed: the TAP is busy or needs privileges, a port is in
  use, an output file (``--trace``, ``--pcap``, ``--plot``) cannot be written.

The address rules are SPEC's: the stack's address and the host side's are
different addresses on the same subnet, and neither is the network or
broadcast address of it (a /31 has neither, RFC 3021; a /32 leaves no one
else on the link and is refused).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from stack.cliargs import RESOURCE, CliError

if TYPE_CHECKING:
    from stack.runtime import Stack
    from stack.services import Service, ServiceSpec

_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


# -- flags that must agree ---------------------------------------------------------


def _usable(flag: str, iface: ipaddress.IPv4Interface) -> None:
    """``iface`` can be one end of a link: a unicast address with room for a peer."""
    ip, net = iface.ip, iface.network
    shown = f"{flag} {iface.with_prefixlen}"
    if ip.is_multicast or ip.is_unspecified or ip == _LIMITED_BROADCAST:
        raise CliError(f"{shown}: {ip} is not a unicast address")
    if ip.is_loopback:
        raise CliError(f"{shown}: {ip} is a loopback address (127.0.0.0/8 stays inside a host)")
    if net.prefixlen == 32:
        raise CliError(f"{shown}: a /32 leaves no other address on the link; "
                       "give the link's prefix, e.g. /24")
    if net.prefixlen <= 30 and ip == net.network_address:
        raise CliError(f"{shown}: {ip} is the network address of {net}")
    if net.prefixlen <= 30 and ip == net.broadcast_address:
        raise CliError(f"{shown}: {ip} is the broadcast address of {net}")


def check_addresses(address: str, host_address: str | None, gateway: str | None) -> None:
    """The stack's address, the kernel side's and the gateway fit together (CIDRs
    as :func:`stack.cliargs.cidr` returns them, the gateway a plain address).
    With ``--address dhcp`` the lease brings the subnet and the gateway."""
    if address == "dhcp":
        if gateway is not None:
            raise CliError(f"--gateway {gateway}: with --address dhcp the lease brings the "
                           "gateway (leave --gateway out)")
        if host_address is not None:
            _usable("--host-address", ipaddress.IPv4Interface(host_address))
        return
    mine = ipaddress.IPv4Interface(address)
    _usable("--address", mine)
    subnet = mine.network
    if host_address is not None:
        host = ipaddress.IPv4Interface(host_address)
        _usable("--host-address", host)
        shown = f"--host-address {host.with_prefixlen}"
        if host.ip == mine.ip:
            raise CliError(f"{shown}: the same address as --address {address}; the kernel "
                           "side and the stack need different addresses")
        if host.ip not in subnet:
            raise CliError(f"{shown}: not on the stack's subnet {subnet} (--address {address})")
        if host.network != subnet:
            raise CliError(f"{shown}: prefix /{host.network.prefixlen} differs from the "
                           f"stack's /{subnet.prefixlen} (--address {address}); both ends "
                           "of a link share one subnet")
    if gateway is not None:
        gw = ipaddress.IPv4Address(gateway)
        if gw not in subnet:
            raise CliError(f"--gateway {gw}: not on the stack's subnet {subnet} (--address "
                           f"{address}); a gateway must be reachable on the link")
        if gw == mine.ip:
            raise CliError(f"--gateway {gw}: the stack's own address")
        if subnet.prefixlen <= 30 and gw in (subnet.network_address, subnet.broadcast_address):
            raise CliError(f"--gateway {gw}: the network or broadcast address of {subnet}")


def check_services(specs: Iterable[ServiceSpec]) -> None:
    """No two services on one port of one transport; every http directory exists."""
    taken: dict[tuple[str, int], ServiceSpec] = {}
    for spec in specs:
        key = (spec.transport, spec.port)
        if key in taken:
            raise CliError(f"--serve {spec}: {spec.transport.upper()} port {spec.port} is "
                           f"already taken by --serve {taken[key]}")
        taken[key] = spec
        if spec.directory is not None and not os.path.isdir(spec.directory):
            raise CliError(f"--serve {spec}: {spec.directory!r} is not a directory")


# -- files ------------------------------------------------------------------------


def check_writable(flag: str, path: str | None) -> None:
    """``path`` can be opened for writing (``-`` and None pass). A file this
    check had to create is removed again: the real writer creates it later."""
    if path is None or path == "-":
        return
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot write: {e.strerror or e}", RESOURCE) from None
    if not existed:
        os.unlink(path)


def check_readable(what: str, path: str) -> None:
    """``path`` (an input; ``-`` is stdin) can be opened for reading."""
    if path == "-":
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CliError(f"{what} {path}: cannot read: {e.strerror or e}") from None


# -- start-up failures -------------------------------------------------------------

_OPEN_FAILURES = {
    errno.EBUSY: "the TAP is busy: another program (another stack up?) has it open",
    errno.EPERM: "permission denied: opening or creating a TAP needs root or CAP_NET_ADMIN",
    errno.EACCES: "permission denied: opening or creating a TAP needs root or CAP_NET_ADMIN",
    errno.ENOENT: "/dev/net/tun is missing (no TUN/TAP support: modprobe tun)",
    errno.ENODEV: "/dev/net/tun is missing (no TUN/TAP support: modprobe tun)",
}


def tap_failure(e: OSError, tap: str, mtu: int, host_address: str | None) -> CliError:
    """The one-line error for a TAP that failed to open or be set up (or a file
    opened after it)."""
    from stack.link.tap import TapError

    reason = e.strerror or str(e)
    if not isinstance(e, TapError):  # not the TAP: a file opened after it (capture, trace)
        return CliError(f"{e.filename or 'start-up'}: {reason}", RESOURCE)
    step = e.step
    if step == "mtu":
        return CliError(f"--mtu {mtu}: TAP {tap} refused it: {reason}", RESOURCE)
    if step == "offload":
        return CliError(f"--offload: TAP {tap} refused the offloads: {reason}", RESOURCE)
    if step == "host_address":
        return CliError(f"--host-address {host_address}: configuring the kernel side of "
                        f"{tap} failed: {reason}", RESOURCE)
    return CliError(f"--tap {tap}: {_OPEN_FAILURES.get(e.errno or 0, reason)}", RESOURCE)


def start_services(net: Stack, specs: Iterable[ServiceSpec],
                   max_clients: int | None = None) -> list[Service]:
    """Start every service on ``net`` (each serving at most ``max_clients``
    TCP clients at once; None: the services' default); on a failure close
    those already started and raise the error (a port in use is a resource
    error)."""
    from stack.services import start_service

    started: list[Service] = []
    try:
        for spec in specs:
            try:
                if max_clients is None:
                    started.append(start_service(net, spec))
                else:
                    started.append(start_service(net, spec, max_clients=max_clients))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise CliError(f"--serve {spec}: {spec.transport.upper()} port {spec.port} "
                                   "is already in use", RESOURCE) from None
                raise CliError(f"--serve {spec}: {e.strerror or e}", RESOURCE) from None
            except ValueError as e:
                raise CliError(f"--serve {spec}: {e}") from None
    except BaseException:
        for svc in started:
            svc.close()
        raise
    return started


def kernel_side_warning(tap: str, address: str, host_address: str | None) -> str | None:
    """The warning for a TAP whose kernel side nobody configured, or None."""
    from stack.link.tap import interface_up

    if host_address is not None or address == "dhcp" or interface_up(tap):
        return None
    mine = ipaddress.IPv4Interface(address)
    peer = next((h for h in mine.network.hosts() if h != mine.ip), None)
    hint = (f" (e.g. ip addr add {peer}/{mine.network.prefixlen} dev {tap}; "
            f"ip link set {tap} up, or --host-address {peer}/{mine.network.prefixlen})"
            if peer is not None else "")
    return (f"no --host-address and the kernel side of {tap} is down: the host cannot "
            f"reach the stack until it is configured{hint}")


# -- quiet ends --------------------------------------------------------------------


def silence_stdout() -> None:
    """After a write to a closed pipe: send what is left of stdout to /dev/null,
    so that neither we nor the interpreter's flush at exit report it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
