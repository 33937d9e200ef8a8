"""The drop-in's contract on two in-memory stacks (no TAP): what is replaced
while patched, that unpatching restores every name exactly, nesting and the
errors, the ``from socket import`` trap both ways, kernel sockets where they
must stay, and patch/unpatch from many threads."""

from __future__ import annotations

import importlib.machinery
import socket
import sys
import threading
import types

import pytest

import stack
from stack import dropin

NAMES = ("socket", "SocketType", "create_connection", "create_server", "getaddrinfo",
         "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn")


@pytest.fixture
def pair():
    a, b = stack.Stack.pair()
    yield a, b
    while dropin.patched_to() is not None:  # a failed test leaves nothing patched
        stack.unpatch()
    a.close()
    b.close()


def _originals():
    return {n: getattr(socket, n) for n in NAMES}


def test_every_name_is_replaced_and_restored_exactly(pair):
    a, _ = pair
    before = _originals()
    with a.patched() as net:
        assert net is a
        during = _originals()
        assert all(during[n] is not before[n] for n in NAMES)
        assert dropin.patched_to() is a
    assert _originals() == before
    assert all(getattr(socket, n) is before[n] for n in NAMES)
    assert dropin.patched_to() is None


def test_stack_sockets_reach_the_other_stack(pair):
    a, b = pair
    srv = b.create_server(("192.0.2.2", 7000))
    with a.patched():
        c = socket.create_connection(("192.0.2.2", 7000), timeout=5)
        s, peer = srv.accept()
        c.sendall(b"ping")
        assert s.recv(4) == b"ping"
        assert c.getpeername() == ("192.0.2.2", 7000)
        assert peer == c.getsockname()
        assert isinstance(c, socket.socket)
        lst = socket.create_server(("192.0.2.1", 7001))
        assert isinstance(lst, socket.socket) and lst.getsockname() == ("192.0.2.1", 7001)
        for x in (c, s, lst):
            x.close()
    assert not isinstance(c, socket.socket)  # a stack socket is one only while patched


def test_create_connection_without_a_timeout_and_with_all_errors(pair):
    a, b = pair
    srv = b.create_server(("192.0.2.2", 7002))
    with a.patched():
        c = socket.create_connection(("192.0.2.2", 7002))  # the module's default timeout
        assert c.gettimeout() is None
        c.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("192.0.2.2", 7003), timeout=5)
        with pytest.raises(ExceptionGroup) as info:
            socket.create_connection(("192.0.2.2", 7003), timeout=5, all_errors=True)
        assert [type(e) for e in info.value.exceptions] == [ConnectionRefusedError]
    srv.close()


def test_getaddrinfo_answers_with_the_module_enums(pair):
    a, _ = pair
    with a.patched():
        infos = socket.getaddrinfo("192.0.2.2", 80, type=socket.SOCK_STREAM)
    assert infos == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                      ("192.0.2.2", 80))]
    assert type(infos[0][0]) is socket.AddressFamily
    assert type(infos[0][1]) is socket.SocketKind


def test_unix_socketpair_and_fileno_stay_the_kernels(pair):
    a, _ = pair
    kernel = socket.socket
    with a.patched():
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        x, y = socket.socketpair()
        raw = kernel(socket.AF_INET, socket.SOCK_DGRAM)
        again = socket.socket(fileno=raw.detach())
        ipv6 = None
        with pytest.raises(OSError) as info:
            ipv6 = socket.socket(socket.AF_INET6)
        assert info.value.errno == 97  # EAFNOSUPPORT: the stack has no IPv6
        assert {type(s) for s in (u, x, y, again)} == {kernel}
        assert all(isinstance(s, socket.socket) for s in (u, x, y, again))
        assert issubclass(kernel, socket.socket) and issubclass(stack.Socket, socket.socket)
        for s in (u, x, y, again):
            s.close()
    assert ipv6 is None


def test_nesting_and_the_errors(pair):
    a, b = pair
    before = _originals()
    with pytest.raises(RuntimeError, match="not patched"):
        stack.unpatch()
    stack.patch(a)
    stack.patch(a)
    with pytest.raises(RuntimeError, match="already patched"):
        stack.patch(b)
    stack.unpatch()
    assert socket.socket is not before["socket"]  # one level left
    stack.unpatch()
    assert _originals() == before
    with pytest.raises(RuntimeError, match="not patched"):
        stack.unpatch()


def test_from_socket_import_is_rebound_both_ways(pair):
    a, _ = pair
    early = types.ModuleType("early_importer")  # did `from socket import ...` before the patch
    early.create_connection = socket.create_connection
    early.resolve = socket.getaddrinfo
    early.socket = socket.socket
    sys.modules["early_importer"] = early
    try:
        with a.patched():
            assert early.create_connection is socket.create_connection
            assert early.resolve is socket.getaddrinfo
            assert early.socket is socket.socket
            late = types.ModuleType("late_importer")  # imported while patched
            late.connect = socket.create_connection
            late.sock = socket.socket
            sys.modules["late_importer"] = late
        assert early.create_connection is socket.create_connection  # the kernel's again
        assert early.resolve is socket.getaddrinfo and early.socket is socket.socket
        assert late.connect is socket.create_connection and late.sock is socket.socket
    finally:
        sys.modules.pop("early_importer", None)
        sys.modules.pop("late_importer", None)


def test_a_subclass_made_while_patched_is_a_kernel_socket(pair):
    a, _ = pair
    with a.patched():
        class Mine(socket.socket):
            def hello(self):
                return "hello"

        m = Mine(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            assert m.hello() == "hello" and isinstance(m, Mine)
            assert not isinstance(a.socket(), Mine)
        finally:
            m.close()


def test_patch_and_unpatch_from_many_threads(pair):
    a, _ = pair
    before = _originals()
    errors = []

    def churn():
        try:
            for _ in range(200):
                stack.patch(a)
                assert socket.socket is not before["socket"]
                stack.unpatch()
        except Exception as e:  # pragma: no cover - what the test looks for
            errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _originals() == before
    assert dropin.patched_to() is None


def test_asyncio_resolves_through_the_stack(pair):
    """``loop.getaddrinfo`` runs ``socket.getaddrinfo`` in its executor: the
    stack's answer has no IPv6 wildcard, the kernel's has one."""
    import asyncio

    a, _ = pair

    async def passive():
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo(None, 80, type=socket.SOCK_STREAM,
                                      flags=socket.AI_PASSIVE)

    with a.patched():
        ours = asyncio.run(passive())
    assert ours == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     ("0.0.0.0", 80))]


def test_select_and_poll_see_a_stack_socket_become_readable(pair):
    import select

    a, b = pair
    srv = b.create_server(("192.0.2.2", 7010))
    with a.patched():
        c = socket.create_connection(("192.0.2.2", 7010), timeout=5)
        peer, _ = srv.accept()
        poller = select.poll()
        poller.register(c, select.POLLIN)
        assert select.select([c], [], [], 0) == ([], [], [])
        assert poller.poll(0) == []
        peer.sendall(b"now")
        assert select.select([c], [], [], 5)[0] == [c]
        assert poller.poll(5000) == [(c.fileno(), select.POLLIN)]
        assert c.recv(3) == b"now"
        assert select.select([c], [], [], 0)[0] == []
        for s in (c, peer, srv):
            s.close()


def test_tls_hook_is_called_and_undone(pair, monkeypatch):
    """``patch`` calls ``stack.tls.patch_ssl()`` when that module exists and
    the undo it returned when unpatched (a stand-in module here)."""
    a, _ = pair
    calls = []
    fake = types.ModuleType("stack.tls")
    fake.patch_ssl = lambda: (calls.append("patch"), lambda: calls.append("undo"))[1]
    fake.__spec__ = importlib.machinery.ModuleSpec("stack.tls", None)
    monkeypatch.setitem(sys.modules, "stack.tls", fake)
    with a.patched():
        assert calls == ["patch"]
        with a.patched():  # nested: no second call
            pass
        assert calls == ["patch"]
    assert calls == ["patch", "undo"]


def test_a_failing_tls_hook_leaves_nothing_patched(pair, monkeypatch):
    a, _ = pair
    before = _originals()
    fake = types.ModuleType("stack.tls")

    def broken():
        raise OSError("no certificates")

    fake.patch_ssl = broken
    fake.__spec__ = importlib.machinery.ModuleSpec("stack.tls", None)
    monkeypatch.setitem(sys.modules, "stack.tls", fake)
    with pytest.raises(OSError, match="no certificates"):
        stack.patch(a)
    assert _originals() == before
    assert dropin.patched_to() is None
