#!/usr/bin/env python3
"""Keep an MLflow server as busy as a tracked training run keeps it.

Usage: mlflow_load.py PORT POINTS_PER_SECOND SECONDS

Creates an experiment and a run on the server at 127.0.0.1:PORT, then sends one `log-batch`
request of POINTS_PER_SECOND / 5 metric points (two keys) every 200 ms for SECONDS, as pretext's
writer does for a run that logs every step. docs/benchmarks.md uses it to measure how much a busy
server on the same machine slows training down by itself.
"""

import http.client
import json
import sys
import time

INTERVAL = 0.2


def call(connection: http.client.HTTPConnection, path: str, body: dict) -> dict:
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}: {data[:200]!r}")
    return json.loads(data or b"{}")


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(f"usage: {argv[0]} PORT POINTS_PER_SECOND SECONDS", file=sys.stderr)
        return 2
    port, rate, seconds = int(argv[1]), float(argv[2]), float(argv[3])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    name = f"load-{time.time()}"
    experiment = call(connection, "/api/2.0/mlflow/experiments/create", {"name": name})
    run = call(
        connection,
        "/api/2.0/mlflow/runs/create",
        {"experiment_id": experiment["experiment_id"], "start_time": int(time.time() * 1000)},
    )
    run_id = run["run"]["info"]["run_id"]
    per_request = max(2, int(rate * INTERVAL))
    end = time.time() + seconds
    step = 0
    while time.time() < end:
        started = time.time()
        now = int(started * 1000)
        metrics = [
            {"key": f"train/k{i % 2}", "value": float(i), "timestamp": now, "step": step + i // 2}
            for i in range(per_request)
        ]
        step += per_request // 2
        call(connection, "/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": metrics})
        time.sleep(max(0.0, INTERVAL - (time.time() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
