"""Build the optional native fast lane of the proxy; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or Python headers) the install still
succeeds and the proxy runs its Python relay only.
"""

from glob import glob

from setuptools import Extension, setup

sources = sorted(glob("src/parlour/proxy/_fastlane/*.c"))

setup(
    ext_modules=[
        Extension(
            "parlour.proxy._fastlane",
            sources=sources,
            depends=sorted(glob("src/parlour/proxy/_fastlane/*.h")),
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
    if sources
    else [],
)
