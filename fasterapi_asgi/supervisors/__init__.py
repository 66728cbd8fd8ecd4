"""Process supervisors: ``Multiprocess`` runs ``--workers N`` children on one shared socket, ``ChangeReload``
restarts the server process when watched files change (``--reload``)."""

from fasterapi_asgi.supervisors.multiprocess import Multiprocess
from fasterapi_asgi.supervisors.reload import ChangeReload

__all__ = ["ChangeReload", "Multiprocess"]
