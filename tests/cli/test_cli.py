"""The command line without a TAP: --version, help, quiet pipes, the checks' edges.

* ``stack --version`` prints ``stack X.Y.Z``, the version in pyproject.toml.
* ``stack up --help`` gives every flag's default and ends with an example;
  every command's help ends with one.
* ``stack trace FILE | head -1`` ends quietly: no traceback, no
  BrokenPipeError, exit 141 (as a tool killed by SIGPIPE).
* Good values pass the checks (a /31, a netmask, a MAC with dashes...), and a
  service port already in use when the services start is a resource error
  (exit 1) that closes the services already started.
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import tomllib

import pytest

from stack import Stack
from stack.cli_checks import check_addresses, kernel_side_warning, start_services, tap_failure
from stack.cliargs import RESOURCE, CliError, cidr, endpoint, mac, mtu
from stack.link.tap import TapError
from stack.services import parse_service
from tests.helpers.cli import ENV, ROOT, assert_one_error, run_stack


def test_version_is_the_package_version():
    r = run_stack("--version")
    assert r.returncode == 0, r.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout == f"stack {version}\n"
    assert re.fullmatch(r"stack \d+\.\d+\.\d+\n", r.stdout)


def _options(help_text: str) -> dict[str, str]:
    """Each option's help entry in an argparse help text, by its first flag."""
    section = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    entries: dict[str, str] = {}
    flag = None
    for line in section.splitlines():
        m = re.match(r"  (-[-\w]+)", line)
        if m:
            flag = m.group(1)
            entries[flag] = line
        elif flag is not None:
            entries[flag] += " " + line.strip()
    return entries


def test_stack_up_help_gives_every_default_and_an_example():
    r = run_stack("up", "--help")
    assert r.returncode == 0, r.stderr
    options = _options(r.stdout)
    for flag in ("--tap", "--address", "--host-address", "--gateway", "--mac", "--mtu",
                 "--serve", "--trace", "--trace-format", "--pcap", "--impair",
                 "--congestion", "--msl", "--busy-poll", "--offload"):
        assert flag in options, flag
    missing = [f for f, text in options.items() if f != "-h" and "(default:" not in text]
    assert not missing, missing
    assert "(default: tap0)" in options["--tap"]
    assert "(default: 192.0.2.2/24)" in options["--address"]
    assert "(default: 1500)" in options["--mtu"]
    assert "(default: 30)" in options["--msl"]
    assert "(default: cubic)" in options["--congestion"]
    tail = r.stdout.rsplit("\n\n", 1)[1]
    assert tail.startswith("example") and "stack up --host-address 192.0.2.1/24" in tail


def test_every_command_has_an_example():
    r = run_stack("--help")
    assert r.returncode == 0, r.stderr
    listing = r.stdout.split("COMMAND\n", 1)[1].split("\n\n", 1)[0]
    commands = re.findall(r"^    (\w+) ", listing, re.M)
    assert "up" in commands and "trace" in commands, listing
    for command in commands:
        h = run_stack(command, "--help")
        assert h.returncode == 0, h.stderr
        assert re.search(r"\n\nexamples?\b[^\n]*:\s+stack " + command, h.stdout), (command, h.stdout)


def test_output_into_head_ends_quietly(tmp_path):
    """A timeline of about 1 MB into ``head -1``: the write that meets the closed pipe
    ends the command quietly (the old code ended in a BrokenPipeError traceback)."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(2000):
            conn = f"192.0.2.2:80-192.0.2.1:{10000 + i}"
            for n, (a, b) in enumerate((("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED"),
                                        ("ESTABLISHED", "CLOSE_WAIT"))):
                f.write(json.dumps({"t": i * 0.01 + n * 0.001, "layer": "tcp", "event": "state",
                                    "conn": conn, "from": a, "to": b, "cause": "segment"}) + "\n")
    full = run_stack("trace", str(path))
    # Well beyond a pipe buffer (64 KB): the command is still writing when head exits.
    assert full.returncode == 0 and len(full.stdout) > 1 << 18, full.stderr
    r = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -m stack trace '
                        f'"{path}" | head -1'], capture_output=True, text=True, timeout=60,
                       env=ENV, cwd=ROOT)
    assert r.stderr == "", r.stderr
    assert r.stdout == full.stdout.splitlines(keepends=True)[0]
    assert r.returncode == 141, r.returncode


def test_good_values_pass():
    assert cidr("192.0.2.2/255.255.255.0") == "192.0.2.2/24"
    assert mac("02-53-C0-00-02-02") == "02:53:c0:00:02:02"
    assert mtu("68") == 68 and mtu("65535") == 65535
    assert endpoint(":80") == ":80" and endpoint("192.0.2.1:0") == "192.0.2.1:0"
    check_addresses("192.0.2.2/24", "192.0.2.1/24", "192.0.2.1")
    check_addresses("198.51.100.2/24", None, "198.51.100.254")
    # A /31 has no network or broadcast address (RFC 3021): both ends are usable.
    check_addresses("192.0.2.0/31", "192.0.2.1/31", None)


@pytest.mark.parametrize("address,host", [("192.0.2.0/30", None), ("192.0.2.3/30", None),
                                          ("192.0.2.1/30", "192.0.2.3/30")])
def test_network_and_broadcast_of_a_small_subnet_are_refused(address, host):
    with pytest.raises(CliError) as e:
        check_addresses(address, host, None)
    assert e.value.code == 2
    assert ("network" in e.value.message) or ("broadcast" in e.value.message)


def test_a_port_in_use_is_a_resource_error_and_closes_what_started():
    a, b = Stack.pair()
    try:
        taken = a.create_server(("0.0.0.0", 7))
        with pytest.raises(CliError) as e:
            start_services(a, [parse_service("http:80"), parse_service("echo:7")])
        assert e.value.code == RESOURCE
        assert "--serve echo:7" in e.value.message and "in use" in e.value.message
        taken.close()
        # http:80 was started before echo:7 failed, and closed again: 80 is free.
        again = a.create_server(("0.0.0.0", 80))
        again.close()
    finally:
        a.close()
        b.close()


def test_the_warning_names_the_missing_flag_and_a_way_out():
    text = kernel_side_warning("tclinone", "198.51.100.2/24", None)
    assert text is not None and "--host-address" in text and "tclinone" in text
    assert "198.51.100.1/24" in text  # a suggestion on the stack's own subnet
    assert kernel_side_warning("tclinone", "198.51.100.2/24", "198.51.100.1/24") is None


def test_a_stop_signal_before_the_wait_is_not_lost():
    code = ("import os, signal; from stack.cli import StopSignals; "
            "s = StopSignals(signal.SIGTERM); os.kill(os.getpid(), signal.SIGTERM); "
            "s.wait(); print('stopped')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20, env=ENV, cwd=ROOT)
    assert (r.returncode, r.stdout, r.stderr) == (0, "stopped\n", "")


def test_a_stop_signal_another_thread_receives_ends_the_wait():
    # The kernel may deliver SIGTERM to any thread; the network thread here.
    code = ("import signal, threading, time; from stack.cli import StopSignals; "
            "s = StopSignals(signal.SIGTERM); "
            "t = threading.Thread(target=lambda: (time.sleep(0.3), "
            "signal.pthread_kill(threading.get_ident(), signal.SIGTERM)), daemon=True); "
            "t.start(); s.wait(); print('stopped')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20, env=ENV, cwd=ROOT)
    assert (r.returncode, r.stdout, r.stderr) == (0, "stopped\n", "")


def test_other_signals_run_their_handlers_and_the_wait_goes_on():
    code = ("import os, signal, threading, time; from stack.cli import StopSignals; "
            "s = StopSignals(signal.SIGTERM); t0 = time.monotonic(); "
            "signal.signal(signal.SIGUSR1, lambda *_: print('report', flush=True)); "
            "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start(); "
            "os.kill(os.getpid(), signal.SIGUSR1); s.wait(); "
            "print('stopped after the SIGTERM', time.monotonic() - t0 > 0.4)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20, env=ENV, cwd=ROOT)
    assert (r.returncode, r.stdout, r.stderr) == (0, "report\nstopped after the SIGTERM True\n", "")


@pytest.mark.parametrize("error,names", [
    (TapError("open", errno.EBUSY, "x"), ["--tap tap9", "busy"]),
    (TapError("open", errno.EPERM, "x"), ["--tap tap9", "permission denied"]),
    (TapError("open", errno.ENOENT, "x"), ["--tap tap9", "/dev/net/tun"]),
    (TapError("mtu", errno.EINVAL, "Invalid argument"), ["--mtu 9000", "Invalid argument"]),
    (TapError("offload", errno.EINVAL, "Invalid argument"), ["--offload"]),
    (TapError("host_address", None, "ip addr replace: RTNETLINK answers: File exists"),
     ["--host-address 192.0.2.1/24", "RTNETLINK"]),
    (PermissionError(errno.EACCES, "Permission denied", "/x/cap.pcap"),
     ["/x/cap.pcap", "Permission denied"]),
], ids=["busy", "eperm", "no-tun", "mtu", "offload", "host-address", "a-file"])
def test_start_up_failures_name_the_flag(error, names):
    e = tap_failure(error, "tap9", 9000, "192.0.2.1/24")
    assert e.code == RESOURCE
    for name in names:
        assert name in e.message, (name, e.message)


def test_a_file_that_is_not_a_trace_is_one_error_line(tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(bytes(range(256)) * 4)
    assert_one_error(run_stack("trace", str(junk)), 2, "junk.jsonl", "not a jsonl trace")
