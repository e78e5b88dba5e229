#!/usr/bin/env python3
"""Time how fast the MLflow Python client delivers metric points, and print the result as JSON.

Usage: mlflow_client_rate.py URI MODE POINTS KEYS

MODE is `sync` (one `mlflow.log_metric` call per point), `async` (`mlflow.log_metric` with
`synchronous=False` per point, timed until `mlflow.flush_async_logging()` returns) or `batch`
(`MlflowClient.log_batch` with 1000 metrics per call, MLflow's maximum). Each mode logs POINTS
points spread over KEYS keys (`bench/k0`, `bench/k1`, ...) into a new run of experiment
`bench-python`, ends the run, and reads the history of `bench/k0` back with
`MlflowClient.get_metric_history` to count what the server stored. The output is one JSON object
with mode, points, seconds, points_per_second, run_id and stored_k0. The `mlflow_log` bench of
the host crate runs this script against a server it started on 127.0.0.1.
"""

import json
import sys
import time

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

MODES = ("sync", "async", "batch")
BATCH_SIZE = 1000


def log_points(client: MlflowClient, run_id: str, mode: str, points: int, keys: int) -> None:
    now = int(time.time() * 1000)
    if mode == "batch":
        for start in range(0, points, BATCH_SIZE):
            batch = [
                Metric(f"bench/k{i % keys}", float(i), now, i // keys)
                for i in range(start, min(start + BATCH_SIZE, points))
            ]
            client.log_batch(run_id, metrics=batch)
        return
    synchronous = mode == "sync"
    for i in range(points):
        mlflow.log_metric(
            f"bench/k{i % keys}", float(i), step=i // keys, timestamp=now, synchronous=synchronous
        )
    if not synchronous:
        mlflow.flush_async_logging()


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[2] not in MODES:
        print(f"usage: {argv[0]} URI {{{'|'.join(MODES)}}} POINTS KEYS", file=sys.stderr)
        return 2
    uri, mode, points, keys = argv[1], argv[2], int(argv[3]), int(argv[4])

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-python")
    client = MlflowClient(uri)
    with mlflow.start_run(run_name=f"python-{mode}") as run:
        run_id = run.info.run_id
        started = time.perf_counter()
        log_points(client, run_id, mode, points, keys)
        seconds = time.perf_counter() - started

    stored = len(client.get_metric_history(run_id, "bench/k0"))
    result = {
        "mode": mode,
        "points": points,
        "seconds": seconds,
        "points_per_second": points / seconds,
        "run_id": run_id,
        "stored_k0": stored,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
