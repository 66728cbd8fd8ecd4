"""ASGI lifespan protocol drivers: ``on`` (also used for ``auto``) and ``off``."""

from fasterapi_asgi.lifespan.off import LifespanOff
from fasterapi_asgi.lifespan.on import LifespanOn

__all__ = ["LifespanOff", "LifespanOn"]
