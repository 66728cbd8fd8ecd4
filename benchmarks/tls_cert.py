"""Write a throw-away certificate chain and key for TLS benchmarks (trustme, from the test extra).

    python benchmarks/tls_cert.py build/tls      # -> build/tls/chain.pem, build/tls/key.pem (PKCS#8)

Then: fasterapi-asgi bench APP --tls build/tls/chain.pem:build/tls/key.pem ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import trustme


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "build/tls")
    out.mkdir(parents=True, exist_ok=True)
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    chain = out / "chain.pem"
    chain.unlink(missing_ok=True)
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    cert.private_key_pem.write_to_path(str(out / "key.pem"))
    print(f"{chain}:{out / 'key.pem'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
