"""The hot paths: C when the cffi module is built, else the pure-Python twin.

``IMPL`` says which one is active ("c" or "python"). ``STACK_NATIVE=python``
in the environment chooses the twins even when the C module is built (to
compare the two on a real link); it is read once, at import.
"""

from __future__ import annotations

import os

try:  # pragma: no cover - which branch runs depends on the build
    if os.environ.get("STACK_NATIVE") == "python":
        raise ImportError("STACK_NATIVE=python")
    from stack._native_impl import (FrameReader, GsoWriter, Reassembly, checksum, csum_partial,
                                    gro_coalesce, gso_segment)

    IMPL = "c"
except ImportError:  # pragma: no cover
    # The names are typed by the first import. The twin classes share one
    # interface but are distinct classes, which mypy cannot unify here.
    from stack.native_py import (  # type: ignore[assignment]
        FrameReader, GsoWriter, Reassembly, checksum, csum_partial, gro_coalesce, gso_segment)

    IMPL = "python"

__all__ = ["IMPL", "FrameReader", "GsoWriter", "Reassembly", "checksum", "csum_partial",
           "gro_coalesce", "gso_segment"]
