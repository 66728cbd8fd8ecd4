"""Server memory per open WebSocket session, with and without permessage-deflate.

    python -m fasterapi_asgi ws_raw:app --app-dir tests/python/apps --port 8460 --no-access-log &
    python benchmarks/ws_sessions.py --port 8460 --pid $! --sessions 500 --compression deflate

Opens N sessions to ``/echo`` (one message round trip on each), then prints the growth of the server's
``VmRSS`` per session.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.client import connect


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])


async def measure(port: int, pid: int, sessions: int, compression: str | None) -> float:
    before = rss_kb(pid)
    conns = []
    for _ in range(sessions):
        ws = await connect(f"ws://127.0.0.1:{port}/echo", compression=compression)
        await ws.send("hello " * 100)
        await ws.recv()
        conns.append(ws)
    await asyncio.sleep(0.5)
    per_session = (rss_kb(pid) - before) / sessions
    for ws in conns:
        await ws.close()
    return per_session


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    args = p.parse_args()
    compression = None if args.compression == "none" else "deflate"
    kb = asyncio.run(measure(args.port, args.pid, args.sessions, compression))
    print(f"compression={args.compression} sessions={args.sessions} rss per session={kb:.1f} KB")


if __name__ == "__main__":
    main()
