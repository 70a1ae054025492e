"""The local app under load: `predict.py --serve` against `predict.py` on the same photos, side by side.

Starts the server on a free port of 127.0.0.1 (never another address), times its first answer,
then sends the photos one at a time (single-picture latency), then `--requests` of them from
`--clients` clients at once on kept-alive connections, and stops by itself. Prints p50/p99
latency, images/s, errors, how many pictures went together (dynamic batching), and the ratio to
`predict.py`'s own labeling rate on the same photos, measured in the same run.

Usage: python bench/serve_load.py --model-dir MODEL [--requests 2000] [--clients 8] [--single 200]
"""

import argparse
import concurrent.futures
import http.client
import itertools
import json
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import ROOT, machine, photos_dir, run_script, table


def post(connection, body):
    """(status, seconds, batch size) of one POST /api/predict on a kept-alive connection."""
    began = time.perf_counter()
    connection.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    answer = response.read()
    seconds = time.perf_counter() - began
    if response.status == 200:
        json.loads(answer)
    return response.status, seconds, int(response.headers.get("X-Batch") or 0)


def load(port, bodies, requests, clients):
    """Sends `requests` pictures from `clients` threads, each on its own connection: (latencies, statuses, batch
    sizes, wall seconds)."""
    chosen = list(itertools.islice(itertools.cycle(bodies), requests))
    shares = [chosen[n::clients] for n in range(clients)]

    def client(share):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        results = []
        for body in share:
            try:
                results.append(post(connection, body))
            except (OSError, http.client.HTTPException) as error:
                results.append((f"{type(error).__name__}", 0.0, 0))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.close()
        return results

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [row for rows in pool.map(client, shares) for row in rows]
    wall = time.perf_counter() - began
    statuses = [status for status, _, _ in results]
    return [seconds for _, seconds, _ in results], statuses, [batch for _, _, batch in results], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a model folder trained by train_cnn.py")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--single", type=int, default=200, help="pictures sent one at a time, for the latency")
    args = parser.parse_args()
    photos = sorted(p for p in (photos_dir() / "Test_Set").rglob("*") if p.is_file())
    bodies = [path.read_bytes() for path in photos]
    print(f"Machine: {machine()}")

    with tempfile.TemporaryDirectory() as folder:
        _, output, _ = run_script("predict.py", "--model-dir", args.model_dir, "--input", photos_dir() / "Test_Set",
                                  "--output", f"{folder}/p.csv")  # fmt: skip
        rate = float(re.search(r"\(([\d.]+) images/s", output).group(1))
    print(f"predict.py on {len(photos)} photos: {rate:.0f} images/s (its own figure, model loading excluded)")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(ROOT / "predict.py"), "--serve", "--port", str(port), "--model-dir", args.model_dir]
    started = time.perf_counter()
    log = tempfile.TemporaryFile("w+")  # the server's output, read once it stopped (a pipe could fill and stall it)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status, _, _ = post(connection, bodies[0])
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 120:
                    log.seek(0)
                    sys.exit(f"the server did not start: {log.read()}")
                time.sleep(0.05)
        first = time.perf_counter() - started
        alone = [post(connection, body) for body in itertools.islice(itertools.cycle(bodies), args.single)]
        single, single_errors = [seconds for _, seconds, _ in alone], sum(status != 200 for status, _, _ in alone)
        connection.close()
        latencies, statuses, batches, wall = load(port, bodies, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.seek(0)
        errors_logged = [line for line in log.read().splitlines() if line.startswith("error")]
    errors = sum(status != 200 for status in statuses)
    throughput = len(statuses) / wall
    rows = [
        ["start to first answer", f"{first:.2f} s", "", "", ""],
        ["1 client, one picture at a time", f"{np.percentile(single, 50) * 1000:.0f} ms",
         f"{np.percentile(single, 99) * 1000:.0f} ms", f"{len(single) / sum(single):.0f}", str(single_errors)],
        [f"{args.clients} clients, {len(statuses)} requests", f"{np.percentile(latencies, 50) * 1000:.0f} ms",
         f"{np.percentile(latencies, 99) * 1000:.0f} ms", f"{throughput:.0f}", str(errors)],
    ]  # fmt: skip
    print(table(rows, ["", "p50", "p99", "images/s", "errors"]))
    print(f"{args.clients} clients: {throughput / rate:.0%} of predict.py's {rate:.0f} images/s; pictures labeled "
          f"together: mean {np.mean(batches):.1f}, max {max(batches)}; server exit: {server.returncode} "
          f"(terminated), error lines it logged: {len(errors_logged)}")  # fmt: skip


if __name__ == "__main__":
    main()
