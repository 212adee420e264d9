"""vecpack over HTTP: a FastAPI app serving one database folder, with API keys (extra: server)::

    from vecpack.server import Limits, create_app
    app = create_app("my.db", limits=Limits(max_k=100))   # run with uvicorn, or `vecpack serve`
"""

from vecpack.server.app import Limits, create_app
from vecpack.server.auth import ApiKey, KeyStore

__all__ = ["ApiKey", "KeyStore", "Limits", "create_app"]
