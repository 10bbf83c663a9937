"""Admin HTTP API, Prometheus endpoint and web dashboard for `parlour proxy`."""

from parlour.proxy.admin.app import RedactingAccessLogger, create_admin_app, status_for_code

__all__ = ["RedactingAccessLogger", "create_admin_app", "status_for_code"]
