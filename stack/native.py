"""The hot paths: C when the cffi module is built, else the pure-Python twin.

``IMPL`` says which one is active ("c" or "python").
"""

from __future__ import annotations

try:  # pragma: no cover - which branch runs depends on the build
    from stack._native_impl import Reassembly, checksum, csum_partial, gso_segment

    IMPL = "c"
except ImportError:  # pragma: no cover
    # The names are typed by the first import. The two Reassembly classes share
    # one interface but are distinct classes, which mypy cannot unify here.
    from stack.native_py import (  # type: ignore[assignment]
        Reassembly, checksum, csum_partial, gso_segment)

    IMPL = "python"

__all__ = ["IMPL", "Reassembly", "checksum", "csum_partial", "gso_segment"]
