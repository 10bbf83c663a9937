"""Fixtures for the packet lab tests."""

from __future__ import annotations

import pytest
from packets_helpers import TSHARK, TsharkFields, run_tshark_fields


@pytest.fixture
def tshark_fields() -> TsharkFields:
    """Run ``tshark -T fields`` with checksum validation on; one list of values per packet."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (CI installs it with apt)")
    return run_tshark_fields
