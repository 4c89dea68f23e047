"""The web endpoint under load: concurrent uploads and slow clients (a tool, not a test).

Starts the real web server alone on a fresh database (no transcription), then measures:
1. N uploads of M MB at once: wall time, throughput, every byte checked in inbox/web/;
2. K slow clients (headers that never end, uploads stalled half-way) held open while the page
   API is asked again and again: latency of /api/overview with and without them.

    python bench/web_load.py                      # 16 x 32 MB uploads, 500 slow clients
    python bench/web_load.py --uploads 8 --mb 8 --slow 200
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.web import Client, bare_server  # noqa: E402


def latencies(c: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        code, _, _ = c.request("GET", "/api/overview")
        assert code == 200
        out.append(1000 * (time.perf_counter() - t0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--mb", type=float, default=32)
    ap.add_argument("--slow", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        web = bare_server(Path(tmp), max_upload_mb=args.mb * 2)
        try:
            c = Client(f"http://127.0.0.1:{web.port}")
            c.session()
            blobs = {f"load/{i}.wav": os.urandom(int(args.mb * 1024 * 1024))
                     for i in range(args.uploads)}
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.uploads) as pool:
                codes = list(pool.map(lambda kv: c.upload(*kv)[0], blobs.items()))
            wall = time.perf_counter() - t0
            ok = all(code == 200 for code in codes) and all(
                hashlib.sha256((web.settings.inbox / "web" / k).read_bytes()).digest()
                == hashlib.sha256(v).digest() for k, v in blobs.items())
            total_mb = args.uploads * args.mb
            print(f"{args.uploads} concurrent uploads of {args.mb:g} MB: {wall:.2f} s, "
                  f"{total_mb / wall:.0f} MB/s, all intact: {ok}")

            quiet = latencies(c, 50)
            slow = []
            for i in range(args.slow):
                s = socket.create_connection(("127.0.0.1", web.port), timeout=30)
                if i % 2:
                    s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                else:
                    s.sendall(f"PUT /api/upload?name=slow{i}.wav HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              f"Cookie: {c.cookie}\r\nX-CSRF-Token: {c.csrf}\r\n"
                              "Content-Length: 1000000\r\n\r\n".encode() + b"\0" * 50_000)
                slow.append(s)
            busy = latencies(c, 50)
            for s in slow:
                s.close()
            print(f"/api/overview alone: median {statistics.median(quiet):.1f} ms, "
                  f"max {max(quiet):.1f} ms")
            print(f"/api/overview with {args.slow} slow clients open: median "
                  f"{statistics.median(busy):.1f} ms, max {max(busy):.1f} ms")
            print(f"RESULT uploads_mb_per_s={total_mb / wall:.0f} intact={ok} "
                  f"slow_clients={args.slow} overview_ms_median={statistics.median(busy):.1f} "
                  f"overview_ms_max={max(busy):.1f}")
        finally:
            web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
