"""ASGI middleware applied by ``Config.load()``: ASGI 2 adaptation and proxy headers."""
