"""The lessons: each builds a topology, runs a scenario in it and says, from
the traces and captures it left, whether the behaviour it teaches happened.

A lesson is a function decorated with :func:`lesson`; it gets the running
:class:`~stack.lab.lab.Lab` and returns a :class:`Report`: the story of what
happened, where to look (files under ``--out`` and the lines in them), and
checks, each saying what was seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stack.lab.lab import Lab


@dataclass
class Check:
    what: str
    ok: bool
    seen: str = ""


@dataclass
class Report:
    story: str
    look: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def check(self, what: str, ok: bool, seen: object = "") -> bool:
        self.checks.append(Check(what, bool(ok), str(seen)))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


@dataclass
class Lesson:
    name: str
    title: str
    topology: str
    scenario: Callable[[Lab], Report]
    stack_flags: list[str] = field(default_factory=list)


LESSONS: dict[str, Lesson] = {}


def lesson(name: str, title: str, topology: str, stack_flags: tuple[str, ...] = ()
           ) -> Callable[[Callable[[Lab], Report]], Callable[[Lab], Report]]:
    def register(fn: Callable[[Lab], Report]) -> Callable[[Lab], Report]:
        LESSONS[name] = Lesson(name, title, topology, fn, list(stack_flags))
        return fn
    return register


ORDER = ("handshake", "refused", "closewait", "timewait", "mtu", "fragments", "nat", "dns",
         "traceroute", "loss", "loss-and-recovery", "dhcp")


def load_all() -> dict[str, Lesson]:
    """Every lesson, in the order the seed articles teach them."""
    from stack.lab.lessons import basics, names, paths, routing  # noqa: F401  (they register)
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(LESSONS.items(), key=lambda kv: rank.get(kv[0], len(rank))))
