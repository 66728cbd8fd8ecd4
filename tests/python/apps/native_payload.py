"""A static file served by the native ``file()`` handler in native_app.py (its content is the payload)."""

PAYLOAD = "Ünïcode and bytes, read once at registration."
