"""Build the optional native fast lane of the proxy; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or Python headers) the install still
succeeds and the proxy runs its Python relay only. With OpenSSL's headers and libraries
(Debian: libssl-dev) the fast lane also terminates TLS; without them it is built for plain
HTTP only and TLS listeners use the Python relay (docs/design/proxy-tls.md).
"""

import os
import tempfile
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sources = sorted(glob("src/parlour/proxy/_fastlane/*.c"))

_PROBE = """#include <openssl/ssl.h>
#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error OpenSSL 1.1.1 or later is needed
#endif
int main(void) { SSL_CTX *c = SSL_CTX_new(TLS_server_method()); SSL_CTX_free(c); return 0; }
"""


class BuildExt(build_ext):
    """Link OpenSSL into the fast lane when a test program with it compiles and links."""

    def build_extensions(self) -> None:
        if os.environ.get("PARLOUR_FASTLANE_TLS", "").strip().lower() in ("0", "no", "off"):
            have = False
        else:
            have = self._have_openssl()
        for ext in self.extensions:
            if have:
                ext.define_macros.append(("FL_TLS", "1"))
                ext.libraries += ["ssl", "crypto"]
        if not have:
            print("note: OpenSSL (libssl-dev) not found: the fast lane is built without TLS")
        super().build_extensions()

    def _have_openssl(self) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(_PROBE)
            try:
                objs = self.compiler.compile([src], output_dir=tmp)
                self.compiler.link_executable(
                    objs, "probe", output_dir=tmp, libraries=["ssl", "crypto"]
                )
            except Exception:  # noqa: BLE001 - any failure means "build without TLS"
                return False
        return True


setup(
    cmdclass={"build_ext": BuildExt},
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
