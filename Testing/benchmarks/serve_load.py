"""Load on `memseg serve` over loopback: K concurrent clients x N requests each, with a tiny job
(medsam-lite, one axis, a few real CT slices), then it stops by itself.

    python Testing/benchmarks/serve_load.py [--clients 4] [--requests 5] [--slices 4] [--workers 1]
                                            [--json Testing/benchmarks/results/serve_load.json]

Starts a real server (uvicorn, 127.0.0.1, an ephemeral port) in a subprocess, warms the model
with one request, then runs the clients in threads of this process with `MemSegClient`. Prints
jobs/s and the p50/p95/max end-to-end latency (upload, queue, segmentation, download) and writes
them as JSON. Every result is checked against the first one. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout, installed or not

from MemSegLogic import Volume  # noqa: E402
from MemSegLogic.app.demo import seed_box  # noqa: E402
from MemSegLogic.app.samples import load_chest_ct  # noqa: E402
from MemSegLogic.serve import MemSegClient  # noqa: E402


def tiny_case(slices: int):
    volume, segments = load_chest_ct()
    _, k = seed_box(segments["right lung"])
    crop = slice(k - slices // 2, k - slices // 2 + slices)
    prompt, _ = seed_box(segments["right lung"][crop])
    return Volume(np.ascontiguousarray(volume.array[crop]), volume.ijk_to_ras), prompt


def start_server(workers: int, threads: int):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    process = subprocess.Popen([sys.executable, "-m", "MemSegLogic", "serve", "--port", str(port),
                                "--workers", str(workers)], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            return process, url, MemSegClient(url).info()
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--slices", type=int, default=4, help="CT slices per request")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's CPU threads")
    parser.add_argument("--json", default=str(REPO / "Testing" / "benchmarks" / "results" / "serve_load.json"))
    args = parser.parse_args(argv)

    volume, prompt = tiny_case(args.slices)
    process, url, info = start_server(args.workers, args.threads)
    try:
        reference = MemSegClient(url).segment_volume(volume, prompt, model="medsam-lite", axes=1).mask  # warm-up
        latencies, failures, lock = [], [], threading.Lock()

        def client_loop():
            client = MemSegClient(url, poll_seconds=0.02)
            for _ in range(args.requests):
                started = time.perf_counter()
                try:
                    mask = client.segment_volume(volume, prompt, model="medsam-lite", axes=1).mask
                    ok = np.array_equal(mask, reference)
                except Exception as error:  # counted, not fatal: the figure says how many failed
                    ok, mask = False, error
                with lock:
                    (latencies if ok else failures).append(time.perf_counter() - started if ok else repr(mask))

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)

    figures = {
        "clients": args.clients, "requests_per_client": args.requests, "slices": args.slices,
        "volume_shape_kji": list(volume.array.shape), "model": "medsam-lite", "axes": 1,
        "server_workers": args.workers, "server_device": info["device"], "gpu": info["gpu"],
        "completed": len(latencies), "failed": len(failures), "failures": failures[:5],
        "wall_seconds": round(wall, 3), "jobs_per_second": round(len(latencies) / wall, 3),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "latency_max_s": round(float(np.max(latencies)), 3) if latencies else None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "python": sys.version.split()[0],
    }
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{figures['completed']}/{args.clients * args.requests} jobs in {wall:.1f} s: {figures['jobs_per_second']} "
          f"jobs/s; latency p50 {figures['latency_p50_s']} s, p95 {figures['latency_p95_s']} s "
          f"({args.clients} clients, {args.workers} worker(s), {info['device']}) -> {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
