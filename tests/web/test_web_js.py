"""The web client's JavaScript logic, unit-tested in Node (``node --test``): the tus client
(``static/tus.js``: chunks, checksums, resume from the server's offset, token renewal,
refusals, abort), the uploads model (``static/files.js``) and the message records. The files
are the ones served to browsers, imported as ES modules; the tests are ``tests/web/js/``."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"
NODE = shutil.which("node")


def _node_major() -> int:
    assert NODE is not None
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"v(\d+)", out)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(NODE is None, reason="needs Node.js (node --test)")
def test_web_client_js_units() -> None:
    assert NODE is not None
    if _node_major() < 20:
        pytest.skip("needs Node.js 20 or later")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files
    run = subprocess.run(
        # the client's .js files are ES modules (there is no package.json to say so)
        [NODE, "--experimental-default-type=module", "--test", *files],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    passed = re.search(r"^# pass (\d+)", report, re.M)
    assert passed and int(passed.group(1)) >= 20, report[-2000:]
