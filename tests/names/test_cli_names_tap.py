"""``stack up --dns IP --hosts FILE``: the flags' values reach the stack (its
trace says which servers and how many entries its names come from), and bad
values are one ``stack: error:`` line."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import assert_one_error, run_stack
from tests.helpers.tap import kill, stack_up, stop_stack_up


def test_dns_and_hosts_reach_the_stack(netns, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.40 db.test db\n# nothing\n192.0.2.41 cache.test\n::1 ip6-only\n")
    trace = tmp_path / "trace.jsonl"
    up = stack_up("tapdns", "--dns", "192.0.2.1", "--dns", "198.51.100.53",
                  "--hosts", str(hosts), "--trace", str(trace))
    try:
        assert up.stderr.readline().startswith("stack: up")
        stop_stack_up(up)
    finally:
        kill(up)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    config = [e for e in events if e["layer"] == "dns" and e["event"] == "config"]
    assert len(config) == 1
    assert config[0]["servers"] == ["192.0.2.1", "198.51.100.53"]
    assert config[0]["hosts"] == 4  # db.test, db, cache.test, ip6-only (as 127.0.0.1)


@pytest.mark.parametrize("args, names", [
    (["--dns", "example.test"], ["--dns", "example.test"]),
    (["--dns", "192.0.2.1/24"], ["--dns"]),
    (["--hosts", "/nonexistent/hosts"], ["--hosts", "/nonexistent/hosts", "cannot read"]),
])
def test_bad_values_are_one_error_line(args, names):
    r = run_stack("up", "--tap", "tapdnsbad", *args)
    assert_one_error(r, 2, *names)
