import pytest
from proxy_helpers import backends, proxy
from raw_backend import raw_backends
from tls_helpers import pki

from parlour.proxy.fastlane import native_module

__all__ = ["backends", "data_plane", "pki", "proxy", "raw_backends"]


FAST_LANE_BUILT = native_module()[0] is not None

# Modules that never start a proxy (sans-I/O units, the fake control plane, the C head
# parsers): their tests run once. Every other test here runs with each data plane.
NO_DATA_PLANE = {
    "test_proxy_pool.py",
    "test_proxy_balancing.py",
    "test_proxy_health_admission.py",
    "test_proxy_relay_heads.py",
    "test_proxy_http_rules.py",
    "test_proxy_tcp_half_close.py",
    "test_proxy_load_from.py",
    "test_proxy_fastlane_heads.py",
    "test_proxy_fastlane_glue.py",
    "test_cp_admin_api.py",
    "test_cp_dashboard_browser.py",
    "test_cp_dashboard_live.py",
    "test_cp_start_empty.py",
    "test_cp_metrics.py",
    "test_cp_stats_store.py",
}

# Modules that test the native engine itself: their tests run in the fast lane only.
FAST_LANE_ONLY = {"test_proxy_fastlane_engine.py", "test_proxy_fastlane_review.py"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "data_plane" not in metafunc.fixturenames:
        return
    planes = ["python_relay"]
    if metafunc.definition.path.name in FAST_LANE_ONLY:
        planes = ["fast_lane"]  # (the module skips itself when the engine is not built)
    elif (
        FAST_LANE_BUILT
        and metafunc.definition.path.name not in NO_DATA_PLANE
        and metafunc.definition.get_closest_marker("python_relay") is None
    ):
        planes = ["fast_lane", "python_relay"]
    metafunc.parametrize("data_plane", planes, indirect=True)


@pytest.fixture(autouse=True)
def data_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which data plane the proxies a test starts run (in process, or as `parlour proxy`
    subprocesses, which inherit the environment): PARLOUR_PROXY_FAST_LANE=1 or 0."""
    plane: str = request.param
    monkeypatch.setenv("PARLOUR_PROXY_FAST_LANE", "1" if plane == "fast_lane" else "0")
    return plane
