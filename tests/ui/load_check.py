"""The studio under load, on loopback only: N concurrent clients for S seconds, each loading the first page
and the config again and again; prints how many requests were answered and how slowly.

    python tests/ui/load_check.py [--clients 50] [--seconds 30] [--url http://127.0.0.1:PORT/]

Without --url it starts `app.py` on a free port with a temporary STUDIO_HOME and stops it afterwards.
Bounded: at most --clients threads, each with one request in flight, for --seconds, against 127.0.0.1."""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO, free_port, wait_http  # noqa: E402

PATHS = ("", "config")


def client(url: str, until: float, timeout: float, out: list) -> None:
    i = 0
    while time.time() < until:
        path = PATHS[i % len(PATHS)]
        i += 1
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url + path, timeout=timeout) as resp:
                resp.read()
                ok = resp.status == 200
        except OSError:
            ok = False
        out.append((path or "/", ok, time.perf_counter() - t0))


def run(url: str, clients: int, seconds: float, timeout: float = 30.0) -> dict:
    until = time.time() + seconds
    results: list = []
    threads = [threading.Thread(target=client, args=(url, until, timeout, results)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = sorted(r[2] for r in results)
    failed = sum(1 for r in results if not r[1])
    return {"clients": clients, "seconds": seconds, "requests": len(results), "failed_or_timed_out": failed,
            "over_5s": sum(1 for t in times if t > 5), "median_s": round(statistics.median(times), 3),
            "p95_s": round(times[int(0.95 * (len(times) - 1))], 3), "max_s": round(times[-1], 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--url", default="")
    args = p.parse_args()
    if not 1 <= args.clients <= 200 or not 1 <= args.seconds <= 300:
        p.error("--clients 1..200, --seconds 1..300")
    proc = None
    url = args.url
    if not url:
        port = free_port()
        home = tempfile.mkdtemp(prefix="studio-load-")
        env = {**os.environ, "STUDIO_HOME": home, "GRADIO_ANALYTICS_ENABLED": "False"}
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, 240)
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        p.error("loopback only: --url must be http://127.0.0.1:PORT/")
    try:
        print(run(url.rstrip("/") + "/", args.clients, args.seconds))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
