"""The command line's vocabulary: one-line errors and a checker for each flag's value.

Every ``stack`` command reports a mistake as one line on stderr that starts
with ``stack: error:`` and names the flag or resource, and exits 2 (bad usage
or value) or 1 (a resource failed), never with a traceback (SPEC, "Errors on
the command line"). :class:`Parser` makes argparse's own usage errors such a
line; :class:`CliError` carries the others up to ``stack.cli.main``.

The functions below are argparse ``type=`` callables: each takes the text of
one flag and returns its value, or raises ``ArgumentTypeError`` saying what is
wrong with it (argparse adds the flag's name). Checks that need more than one
flag (addresses on one subnet, two services on one port) are in
:mod:`stack.cli_checks`.

Bounds chosen here (README, "Running the stack", lists them):

* ``--mtu`` 68 to 65535: 68 is the smallest MTU every IPv4 host must accept
  (RFC 791) and Linux's minimum for a TAP; 65535 is the largest a TAP takes.
* ``--msl`` more than 0 and at most 3600 seconds (TIME_WAIT lasts twice that;
  Linux's is fixed at 30 s, so 60 s of TIME_WAIT).
* ``--busy-poll`` 0 to 1,000,000 microseconds (one second of spinning).
* ``--dhcp-timeout`` more than 0 and at most 3600 seconds.
* ``--tap``: 1 to 15 characters (IFNAMSIZ less the NUL), no ``/``, ``:`` or
  white space, not ``.`` or ``..`` (what the kernel refuses).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from stack.services import ServiceSpec

#: Exit status for a bad flag, value or combination of flags.
USAGE = 2
#: Exit status for a resource that failed: TAP busy, permission denied, port
#: in use, file not writable.
RESOURCE = 1

MTU_MIN, MTU_MAX = 68, 65535
MSL_MAX = 3600.0
BUSY_POLL_MAX = 1_000_000
MAX_CLIENTS_MAX = 1_000_000  # --max-clients
IFNAME_MAX = 15

_MAC = re.compile(r"[0-9A-Fa-f]{1,2}([:-])[0-9A-Fa-f]{1,2}(\1[0-9A-Fa-f]{1,2}){4}")


class CliError(Exception):
    """A mistake or failure to report as ``stack: error: MESSAGE`` with exit ``code``."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def report(message: str, kind: str = "error") -> None:
    """Write ``stack: KIND: MESSAGE`` as one line on stderr; a closed stderr is no error."""
    line = " ".join(message.split())  # one line, whatever the message held
    try:
        sys.stderr.write(f"stack: {kind}: {line}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``stack: error:`` line (exit 2).

    Subparsers are made of the same class (argparse's default), so every
    command gets this; every parser shows its description and epilog as
    written (examples keep their line breaks)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        report(f"{message} (see '{self.prog} --help')")
        sys.exit(USAGE)


def _bad(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def cidr(text: str) -> str:
    """``ADDRESS/PREFIX`` (or ``ADDRESS/NETMASK``), normalized to ``a.b.c.d/n``."""
    if "/" not in text:
        _bad(f"{text!r} has no prefix: give the address as a CIDR, e.g. {text}/24")
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as e:
        _bad(f"{text!r} is not an IPv4 address/prefix ({e})")
    return iface.with_prefixlen


def address(text: str) -> str:
    """``--address``: a CIDR (:func:`cidr`), or ``dhcp`` for a leased one."""
    return "dhcp" if text.strip().lower() == "dhcp" else cidr(text)


def seconds(text: str) -> float:
    """A time in seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        _bad(f"{text!r} is not a number of seconds")
    if not math.isfinite(value) or not 0 < value <= 3600:
        _bad(f"{text} is out of range: more than 0 and at most 3600 seconds")
    return value


def ipv4(text: str) -> str:
    """A dotted-quad IPv4 address without a prefix."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        _bad(f"{text!r} is not an IPv4 address (a.b.c.d, no prefix)")


def mtu(text: str) -> int:
    """The link MTU, :data:`MTU_MIN` to :data:`MTU_MAX` bytes."""
    try:
        value = int(text, 10)
    except ValueError:
        _bad(f"{text!r} is not a whole number of bytes ({MTU_MIN} to {MTU_MAX})")
    if not MTU_MIN <= value <= MTU_MAX:
        _bad(f"{value} is out of range: an IPv4 link MTU is {MTU_MIN} to {MTU_MAX} bytes")
    return value


def tap_name(text: str) -> str:
    """A network interface name the kernel accepts."""
    if not text:
        _bad("the TAP name is empty")
    if len(text) > IFNAME_MAX:
        _bad(f"{text!r} is {len(text)} characters long; interface names have at most "
             f"{IFNAME_MAX}")
    if any(c in text for c in "/:") or any(c.isspace() for c in text) or text in (".", ".."):
        _bad(f"{text!r} is not a valid interface name (no '/', ':' or spaces)")
    return text


def mac(text: str) -> str:
    """A unicast MAC (six hex bytes separated by ``:`` or ``-``), as ``aa:bb:cc:dd:ee:ff``."""
    if not _MAC.fullmatch(text):
        _bad(f"{text!r} is not a MAC address (six hex bytes, e.g. 02:53:c0:00:02:02)")
    octets = bytes(int(p, 16) for p in re.split("[:-]", text))
    shown = ":".join(f"{b:02x}" for b in octets)
    if octets == b"\xff" * 6:
        _bad(f"{shown} is the broadcast address; the stack needs a unicast MAC")
    if octets[0] & 1:
        _bad(f"{shown} is a multicast address (lowest bit of the first byte set); "
             "the stack needs a unicast MAC")
    if octets == bytes(6):
        _bad("00:00:00:00:00:00 is not a usable MAC")
    return shown


def impair(text: str) -> str:
    """A fault-injection spec ``loss=P,dup=P,reorder=P,corrupt=P,delay=MS,seed=N``."""
    from stack.link.impair import parse_impair

    try:
        parse_impair(text)
    except ValueError as e:
        _bad(str(e).removeprefix("impair: "))
    return text


def service(text: str) -> ServiceSpec:
    """A ``--serve`` spec, parsed (a :class:`stack.services.ServiceSpec`)."""
    from stack.services import parse_service

    try:
        return parse_service(text)
    except ValueError as e:
        _bad(str(e))


def congestion(text: str) -> str:
    """A congestion control the stack implements."""
    from stack.tcp.algorithms import ALGORITHMS

    if text not in ALGORITHMS:
        known = ", ".join(sorted(ALGORITHMS))
        _bad(f"unknown congestion control {text!r} (choose from {known})")
    return text


def msl(text: str) -> float:
    """The maximum segment lifetime in seconds, more than 0 and at most :data:`MSL_MAX`."""
    try:
        value = float(text)
    except ValueError:
        _bad(f"{text!r} is not a number of seconds")
    if not math.isfinite(value) or not 0 < value <= MSL_MAX:
        _bad(f"{text} is out of range: more than 0 and at most {MSL_MAX:g} seconds")
    return value


def busy_poll(text: str) -> int:
    """Microseconds of busy polling, 0 to :data:`BUSY_POLL_MAX`."""
    try:
        value = int(text, 10)
    except ValueError:
        _bad(f"{text!r} is not a whole number of microseconds")
    if not 0 <= value <= BUSY_POLL_MAX:
        _bad(f"{value} is out of range: 0 (off) to {BUSY_POLL_MAX} microseconds")
    return value


def max_clients(text: str) -> int:
    """Clients a service serves at once, 1 to :data:`MAX_CLIENTS_MAX`."""
    try:
        value = int(text, 10)
    except ValueError:
        _bad(f"{text!r} is not a whole number of clients")
    if not 1 <= value <= MAX_CLIENTS_MAX:
        _bad(f"{value} is out of range: 1 to {MAX_CLIENTS_MAX}")
    return value


def hosts_file(text: str) -> dict[str, str]:
    """A hosts file (hosts(5)), read now: ``{name: address}`` for ``Stack(hosts=...)``."""
    from stack.names_hosts import hosts_dict, read_hosts_file

    try:
        return hosts_dict(read_hosts_file(text))
    except OSError as e:
        _bad(f"{text}: cannot read: {e.strerror or e}")
    except UnicodeError as e:
        _bad(f"{text}: not a text file ({e})")


def endpoint(text: str) -> str:
    """``ADDR:PORT``, ``:PORT`` or ``PORT`` as ``stack trace --conn`` takes it."""
    addr, sep, port = text.rpartition(":")
    if not sep:
        addr, port = "", text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        _bad(f"{text!r}: expected ADDR:PORT, :PORT or PORT with a port from 0 to 65535")
    if addr:
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            _bad(f"{text!r}: {addr!r} is not an IPv4 address")
    return text


def version() -> str:
    """The installed package's version (``stack.__version__`` when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("stack")
    except metadata.PackageNotFoundError:
        from stack import __version__

        return __version__
