"""The local dashboard (``stepstore ui``): a read-only JSON API and the page drawn from it.

Needs the ``ui`` extra (``pip install 'stepstore[ui]'``: Starlette and uvicorn); the core
package never imports this one.
"""

from __future__ import annotations

from .app import create_app
from .serving import serve

__all__ = ["create_app", "serve"]
