"""The structure rules of docs/ARCHITECTURE.md, checked on the source.

Who may import whom, who may assign the fields everyone reads, that
sequence arithmetic goes through ``stack/tcp/seq.py``, that no module uses
another module's underscore names, and that every file can be read in one
sitting.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "stack"
SOURCES = sorted(ROOT.rglob("*.py"))


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)


def module_of(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path) -> set[str]:
    """Every ``stack...`` module the file imports, anywhere in it (also
    inside functions and under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "stack"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "stack":
                found.add(node.module)
    return found


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# Layer -> the stack modules it may import (besides itself).
ALLOWED = {
    "stack.wire": ("stack.wire", "stack.native"),
    "stack.tcp": ("stack.tcp", "stack.wire", "stack.native", "stack.trace"),
    "stack.net": ("stack.net", "stack.wire", "stack.native", "stack.trace"),
    "stack.link": ("stack.link", "stack.wire", "stack.native", "stack.trace"),
}
ABOVE_PROTOCOL = ("stack.runtime", "stack.socket", "stack.socket_base", "stack.socket_stream",
                  "stack.socket_dgram", "stack.socket_io", "stack.socket_options",
                  "stack.socket_tcpinfo", "stack.services",
                  "stack.names", "stack.tls", "stack.tls_plain", "stack.dropin", "stack.program",
                  "stack.cli", "stack.tracetool", "stack.live", "stack.control", "stack.ss",
                  "stack.livecmd", "stack.lab", "stack.dhcp", "stack.traceroute", "stack.ping")


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_imports_follow_the_layering(path):
    mod = module_of(path)
    for layer, allowed in ALLOWED.items():
        if under(mod, layer):
            wrong = sorted(m for m in imports(path) if not under(m, *allowed))
            assert not wrong, f"{rel(path)} ({layer}) may not import {wrong}"
    if under(mod, "stack.wire", "stack.tcp", "stack.net", "stack.link"):
        assert not [m for m in imports(path) if under(m, *ABOVE_PROTOCOL)]


def test_the_import_rules_catch_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from stack.runtime import Stack\n")
    assert imports(bad) == {"stack.runtime"}
    assert not under("stack.runtime", *ALLOWED["stack.tcp"])


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_files_stay_readable(path):
    assert len(path.read_text().splitlines()) <= 600


# ---- TCP: one writer for each shared field ----------------------------------------------

TCP = sorted((ROOT / "tcp").glob("*.py"))


def assigned_in(field: str) -> set[str]:
    """The files that assign ``field``: as an attribute or a plain name,
    in ``=``, ``+=`` and the like (keyword arguments are not assignments)."""
    def names(target: ast.expr) -> list[str]:
        if isinstance(target, (ast.Tuple, ast.List)):
            return [n for t in target.elts for n in names(t)]
        if isinstance(target, ast.Attribute):
            return [target.attr]
        return [target.id] if isinstance(target, ast.Name) else []

    found = set()
    for p in TCP:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            if any(field in names(t) for t in targets):
                found.add(p.name)
    return found


@pytest.mark.parametrize("field, owners", [
    ("state", {"states.py"}), ("snd_nxt", {"sender.py"}), ("rcv_nxt", {"receiver.py"}),
    # The congestion controllers: the loss-based ones and BBR.
    ("cwnd", {"congestion.py", "bbr.py"}),
])
def test_one_file_assigns_each_shared_field(field, owners):
    """Every assignment to a connection's state, SND.NXT, RCV.NXT and cwnd
    is in one place (locals of the same name included, so ``grep`` agrees)."""
    assert assigned_in(field) == owners
    rx = re.compile(rf"(?<![\w(,=] )(?<![\w(,=])\b{field}\s*(\+|-)?=(?!=)")
    assert {p.name for p in TCP if rx.search(p.read_text())} == owners


def test_sequence_arithmetic_goes_through_seq_py():
    inlined = re.compile(r"&\s*(MASK|0x[fF]{8}\b|\(1 << 32\) - 1)|(>=|<|>|<=)\s*HALF\b|"
                         r"\b(MASK|HALF|MOD)\b")
    found = [f"{p.name}:{i}: {line.strip()}" for p in TCP if p.name != "seq.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if inlined.search(line)]
    assert found == []


def test_the_sequence_scan_sees_an_inlined_mask():
    rx = re.compile(r"&\s*(MASK|0x[fF]{8}\b)")
    assert rx.search("d = (a - b) & MASK") and rx.search("x & 0xFFFFFFFF")


# ---- no module uses another module's underscore names -------------------------------------

# The protocol threading.Condition speaks to the lock it waits on
# (runtime.StackLock implements it over an RLock).
CONDITION_PROTOCOL = {"_is_owned", "_release_save", "_acquire_restore"}
# A named tuple's public methods carry an underscore so as not to clash with
# its fields (collections.namedtuple's documentation).
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def foreign_private(path: pathlib.Path) -> list[str]:
    """Uses of underscore names that the file does not define itself (a
    class's own private fields on another instance of it are fine)."""
    tree = ast.parse(path.read_text())
    own = CONDITION_PROTOCOL | NAMEDTUPLE_API
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            own.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "self"):
            own.add(node.attr)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and node.attr not in own:
            out.append(f"{rel(path)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            out += [f"{rel(path)}:{node.lineno}: import {a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_the_private_name_scan_sees_a_foreign_one(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("class A:\n    def f(self, conn):\n        return conn._rcvbuf, self._x\n")
    assert foreign_private(bad) == [f"{bad}:3: ._rcvbuf"]


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_no_module_uses_another_modules_underscore_names(path):
    assert foreign_private(path) == []
