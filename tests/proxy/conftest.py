from proxy_helpers import backends, proxy

__all__ = ["backends", "proxy"]
