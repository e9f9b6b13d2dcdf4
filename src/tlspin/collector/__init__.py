"""The tlspin report collector: intake, storage, query API, dashboard and alerts.

Needs the ``collector`` extra (FastAPI, uvicorn, SQLAlchemy, psycopg, Alembic,
prometheus-client, Jinja2). Start it with ``tlspin serve``, or build the ASGI app yourself::

    from tlspin.collector import Settings, create_app
    app = create_app(Settings(db_url="sqlite:///tlspin.db", token="…"))
"""

from __future__ import annotations

from tlspin.collector.app import create_app
from tlspin.collector.settings import Settings

__all__ = ["Settings", "create_app", "create_app_from_env"]


def create_app_from_env() -> object:
    """App factory for ``uvicorn --factory`` and worker processes (``TLSPIN_COLLECTOR_*``)."""
    import os

    from tlspin.collector import logs

    level = os.environ.get(logs.ENV_LOG_LEVEL)
    if level:
        logs.configure(level)
    return create_app(Settings.from_env())
