"""segtool's HTTP service (``segtool[serve]``): KServe v2 / Triton protocol, a REST route, a page."""

from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
