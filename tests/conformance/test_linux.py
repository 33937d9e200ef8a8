"""Every case of tests/conformance/cases/*.pkt, answered by Linux and by the
stack in the same run: the answers must agree, or the case is a difference
the README explains ("Where we differ from Linux, and why"), and then they
must really differ."""

from __future__ import annotations

import pathlib
import re

import pytest

from tests.helpers.conformance import LINUX_TWICE, load_cases

README = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
TABLE = README.split("## Where we differ from Linux, and why", 1)[1].split("\n## ", 1)[0]
EXPLAINED = set(re.findall(r"^\| `([a-z0-9-]+)` \|", TABLE, re.M))

CASES = [(path.stem, case) for path in sorted((pathlib.Path(__file__).parent / "cases")
                                              .glob("*.pkt"))
         for case in load_cases(path)]


@pytest.mark.parametrize("case", [c for _, c in CASES],
                         ids=[f"{f}: {c.name}" for f, c in CASES])
def test_the_stack_answers_like_linux(differ, case):
    linux, stack = differ(case.script)
    shown = "\n".join(["linux:"] + linux + ["stack:"] + stack)
    if LINUX_TWICE:
        assert stack == linux, shown.replace("stack:", "linux, again:")
    elif case.differs is None:
        assert stack == linux, shown
    else:
        assert case.differs in EXPLAINED, f"[differs: {case.differs}] has no row in the README"
        assert stack != linux, f"now agrees with Linux; drop [differs: {case.differs}]\n{shown}"


def test_every_explained_difference_has_a_case():
    used = {c.differs for _, c in CASES}
    assert EXPLAINED and EXPLAINED <= used, sorted(EXPLAINED - used)


def test_the_suite_has_at_least_100_cases():
    assert len(CASES) >= 100
