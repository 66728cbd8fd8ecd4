"""Open N keep-alive connections to a server, make one request on each, then hold them idle.

    python benchmarks/idle_connections.py --port 8000 --count 10000 [--path /plaintext] [--tls]

Prints ``READY <open> <failed>`` on stdout once every connection has its response, then holds the
connections until a line (or EOF) arrives on stdin, closes them all and prints ``CLOSED``. The suite
measures the server's RSS while the connections are held. Raises its own ``RLIMIT_NOFILE`` soft
limit to the hard limit (10,000 connections need more than the usual 1,024 descriptors).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import sys


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def _one(
    host: str, port: int, request: bytes, sem: asyncio.Semaphore, tls: ssl.SSLContext | None = None
) -> asyncio.StreamWriter | None:
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), 10)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
            elif length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            return writer
        except (
            OSError,
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            return None


async def main_async(args: argparse.Namespace) -> int:
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    sem = asyncio.Semaphore(args.parallel)
    tls: ssl.SSLContext | None = None
    if args.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    tasks = [asyncio.ensure_future(_one(args.host, args.port, request, sem, tls)) for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for t in pending:  # a server that stops accepting must not hold the suite for minutes
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    writers = [w for t in done if (w := t.result()) is not None]
    print(f"READY {len(writers)} {args.count - len(writers)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    print("CLOSED", flush=True)
    return 0 if writers else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/plaintext")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--tls", action="store_true", help="connect over TLS (certificate not verified)")
    p.add_argument("--parallel", type=int, default=200, help="connections being opened at once")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds allowed for opening them all")
    args = p.parse_args(argv)
    limit = raise_nofile(args.count + 256)
    if limit < args.count + 16:
        print(f"warning: RLIMIT_NOFILE is {limit}; some connections will fail", file=sys.stderr)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
