"""cffi build script for ``stack._native`` (API mode, out of line).

setup.py names ``native/build.py:ffibuilder`` in ``cffi_modules``, so both
``pip install .`` and ``pip install -e .`` compile the C sources in this folder
into the extension module ``stack._native``. ``stack/_native_impl.py`` wraps it.

To build in place without pip, from the repository root:
``python native/build.py`` (writes ``stack/_native*.so``).
"""

from __future__ import annotations

import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "native.h")
SOURCES = ("checksum.c", "reasm.c", "gso.c", "gro.c", "tapio.c")


def _rel(path: str) -> str:
    # setuptools wants source paths relative to the project (the working directory).
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _cdef() -> str:
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"/\* cdef-begin \*/(.*)/\* cdef-end \*/", text, re.S)
    if found is None:
        raise RuntimeError(f"{HEADER}: no cdef-begin/cdef-end markers")
    return found.group(1)


if sys.platform == "win32":
    _CFLAGS = ["/O2"]
else:
    _CFLAGS = ["-O2", "-std=c99", "-Wall"]

# cffi releases the GIL around every call of an API-mode function. These calls
# take well under a microsecond (a 64 KB checksum about 3 us) and touch no
# Python object, so keep the GIL: it saves ~50 ns a call, and the network
# thread never waits for a busy user thread to hand the GIL back mid-packet.
_PREAMBLE = """\
#include "native.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }

/* The system calls do let go of the GIL: other threads run meanwhile. */
int64_t tap_read_batch(int fd, uint8_t *buf, size_t cap, size_t frame_max, uint32_t *lens,
                       size_t max_frames)
{
    PyThreadState *saved = PyEval_SaveThread();
    int64_t r = tap_read_batch_io(fd, buf, cap, frame_max, lens, max_frames);
    PyEval_RestoreThread(saved);
    return r;
}

int64_t tap_gso_write(int fd, const uint8_t *in, size_t len, uint32_t mtu, uint8_t *scratch,
                      size_t cap, uint32_t *lens, size_t max_frames, uint32_t *dropped)
{
    PyThreadState *saved = PyEval_SaveThread();
    int64_t r = tap_gso_write_io(fd, in, len, mtu, scratch, cap, lens, max_frames, dropped);
    PyEval_RestoreThread(saved);
    return r;
}
"""


def _builder(place) -> FFI:
    """The FFI for ``stack._native``; ``place`` maps each absolute path given to cffi."""
    ffi = FFI()
    ffi.cdef(_cdef())
    ffi.set_source(
        "stack._native",
        _PREAMBLE,
        sources=[place(os.path.join(HERE, name)) for name in SOURCES],
        include_dirs=[place(HERE)],
        depends=[place(HEADER), place(os.path.join(HERE, "bytes.h"))],
        extra_compile_args=_CFLAGS,
    )
    return ffi


ffibuilder = _builder(_rel)

if __name__ == "__main__":
    import glob
    import importlib.machinery
    import shutil
    import tempfile

    package = os.path.join(os.path.dirname(HERE), "stack")
    # cffi compiles inside tmpdir (it changes directory there): absolute paths.
    with tempfile.TemporaryDirectory() as tmp:
        built = _builder(os.path.abspath).compile(tmpdir=tmp, verbose=True)
        for old in glob.glob(os.path.join(package, "_native.*")):
            os.remove(old)  # another build would shadow this one, or be shadowed by it
        # cffi uses the limited API: take the name `pip install -e .` gives, so a
        # later pip build replaces this file instead of hiding behind it.
        name = os.path.basename(built)
        if ".abi3.so" in importlib.machinery.EXTENSION_SUFFIXES:
            name = "_native.abi3.so"
        target = os.path.join(package, name)
        shutil.copyfile(built, target)
    print(target)
