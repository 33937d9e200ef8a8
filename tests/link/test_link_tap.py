"""TapLink against the real kernel. Needs root and a private network namespace.

These tests create TAP devices and put frames on them, so they must never run
in the machine's own network namespace: run them under scripts/test, or by
hand with
``unshare --net -- sh -c 'ip link set lo up; python -m pytest tests/link/test_link_tap.py -q'``.
"""

from __future__ import annotations

import os


def _private_namespace() -> bool:
    """True when this process's netns differs from the initial one.

    The initial namespace is PID 1's. Where /proc/1/ns/net cannot be read
    (some sandboxes refuse it even to root), kthreadd (PID 2, a kernel thread
    that always lives in the initial namespace) stands in for it. If neither
    can be read, the namespace is not known to be private.
    """
    try:
        own = os.readlink("/proc/self/ns/net")
    except OSError:
        return False
    references = []
    try:
        references.append(os.readlink("/proc/1/ns/net"))
    except OSError:
        pass
    try:
        with open("/proc/2/comm") as f:
            if f.read().strip() == "kthreadd":
                references.append(os.readlink("/proc/2/ns/net"))
    except OSError:
        pass
    return bool(references) and all(own != ref for ref in references)


PRIVATE_NAMESPACE = _private_namespace()

import ipaddress  # noqa: E402
import itertools  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

pytestmark = pytest.mark.tap


@pytest.fixture(autouse=True)
def _require_private_namespace():
    if not PRIVATE_NAMESPACE:
        pytest.fail("run under scripts/test (private namespace)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("TAP tests need root (run under scripts/test)", pytrace=False)


from stack.link.tap import TapLink, interface_exists  # noqa: E402

HOST = "192.0.2.1"
OURS = "192.0.2.2"
OUR_MAC = bytes.fromhex("020000000002")


def ip(*args: str) -> str:
    return subprocess.run(("ip", *args), capture_output=True, text=True, check=True).stdout


_names = itertools.count()


@pytest.fixture
def tap_name():
    name = f"taptest{next(_names)}"
    if interface_exists(name):
        ip("link", "del", "dev", name)
    yield name
    if interface_exists(name):
        subprocess.run(("ip", "link", "del", "dev", name), check=False)


def arp_request(sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    eth = b"\xff" * 6 + sender_mac + b"\x08\x06"
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        1,
        sender_mac,
        ipaddress.IPv4Address(sender_ip).packed,
        b"\x00" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )
    return eth + arp


def wait_for(link: TapLink, match, timeout: float = 3.0) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([link], [], [], left)
        for f in link.recv_batch():
            if match(f):
                return f
    return None


def test_create_with_host_address_answers_arp(tap_name):
    with TapLink(tap_name, host_address=f"{HOST}/24") as link:
        assert link.created and interface_exists(tap_name)
        assert link.mtu == 1500
        assert f"inet {HOST}/24" in ip("-o", "addr", "show", "dev", tap_name)
        flags = ip("-o", "link", "show", "dev", tap_name).split("<", 1)[1].split(">", 1)[0]
        assert "UP" in flags.split(",")

        link.send(arp_request(OUR_MAC, OURS, HOST))

        def is_reply(f: bytes) -> bool:
            return f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02"

        reply = wait_for(link, is_reply)
        assert reply is not None, "no ARP reply from the kernel"
        assert reply[0:6] == OUR_MAC
        sha, spa, tha, tpa = struct.unpack_from("!6s4s6s4s", reply, 22)
        assert sha == link.hwaddr and sha == reply[6:12]
        assert spa == socket.inet_aton(HOST)
        assert tha == OUR_MAC and tpa == socket.inet_aton(OURS)
        assert link.dropped == 0
    assert not interface_exists(tap_name), "close() must remove a TAP it created"


def test_mtu_is_set_and_reported(tap_name):
    with TapLink(tap_name, mtu=9000) as link:
        assert link.mtu == 9000
        assert " mtu 9000 " in ip("-o", "link", "show", "dev", tap_name)
    with TapLink(tap_name, mtu=None) as link:
        assert link.mtu == 1500  # a fresh device, left as the kernel made it


def test_existing_tap_is_kept_on_close(tap_name):
    ip("tuntap", "add", "dev", tap_name, "mode", "tap")
    link = TapLink(tap_name, host_address=f"{HOST}/24")
    assert not link.created
    assert f"inet {HOST}/24" in ip("-o", "addr", "show", "dev", tap_name)
    link.close()
    link.close()  # idempotent
    assert interface_exists(tap_name), "close() must not remove a TAP it did not create"
    # and it can be opened again
    with TapLink(tap_name) as again:
        assert not again.created
    assert interface_exists(tap_name)


def test_send_on_a_down_link_is_a_counted_drop(tap_name):
    with TapLink(tap_name) as link:  # no host address: the kernel side stays down
        link.send(arp_request(OUR_MAC, OURS, HOST))
        assert link.dropped == 1
        assert link.recv_batch() == []


def test_recv_batch_respects_the_limit_and_never_blocks(tap_name):
    with TapLink(tap_name, host_address=f"{HOST}/24") as link:
        for i in range(5):
            link.send(arp_request(OUR_MAC, f"192.0.2.{10 + i}", HOST))
        time.sleep(0.2)
        replies: list[bytes] = []
        while True:
            batch = link.recv_batch(limit=2)
            assert len(batch) <= 2
            if not batch:
                break
            replies += [f for f in batch if f[12:14] == b"\x08\x06"]
        assert len(replies) == 5
        assert link.recv_batch() == []


def test_closed_link_refuses_io(tap_name):
    link = TapLink(tap_name)
    link.close()
    with pytest.raises(ValueError):
        link.fileno()
    with pytest.raises(ValueError):
        link.send(b"\x00" * 60)
    with pytest.raises(ValueError):
        link.recv_batch()


def test_errors_are_reported():
    with pytest.raises(OSError):
        TapLink("lo")  # exists and is no TAP
    with pytest.raises(ValueError):
        TapLink("x" * 16)
    with pytest.raises(ValueError):
        TapLink("tapbad", host_address="192.0.2.300/24")
    assert not interface_exists("tapbad")
