"""Process supervisors: ``Multiprocess`` runs ``--workers N`` children on one shared socket."""

from fasterapi_asgi.supervisors.multiprocess import Multiprocess

__all__ = ["Multiprocess"]
