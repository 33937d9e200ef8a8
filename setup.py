# The C module is described in native/build.py; cffi's setuptools hook compiles it.
from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
