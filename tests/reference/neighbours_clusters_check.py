#!/usr/bin/env python3
"""Score saved embeddings with scikit-learn's KNeighborsClassifier and KMeans, printing JSON.

Usage: neighbours_clusters_check.py DIR

DIR contains train.npy ([N, D] floats), train_labels.npy ([N] integers), test.npy,
test_labels.npy, assignments.npy (another implementation's cluster index per test row) and
settings.json with `k` (neighbours) and `clusters`. The output is one JSON object:

- knn_distance, knn_uniform: test accuracy of
  KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=...) fitted on the train split;
- kmeans_nmi, kmeans_ari: normalized_mutual_info_score and adjusted_rand_score of
  KMeans(n_clusters=clusters, n_init=10, random_state=0) fitted on the test embeddings;
- assigned_nmi, assigned_ari: the same two scores of assignments.npy, so that the metric
  functions can be compared on identical clusterings.

The Rust tests of the knn and kmeans evaluators run this script.
"""

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier

ARRAYS = ("train", "train_labels", "test", "test_labels", "assignments")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2

    folder = Path(argv[1])
    missing = [name for name in ARRAYS if not (folder / f"{name}.npy").is_file()]
    if missing or not (folder / "settings.json").is_file():
        print(f"missing in {folder}: {missing} or settings.json", file=sys.stderr)
        return 2
    data = {name: np.load(folder / f"{name}.npy") for name in ARRAYS}
    settings = json.loads((folder / "settings.json").read_text())

    scores = {}
    for weights in ("distance", "uniform"):
        model = KNeighborsClassifier(n_neighbors=settings["k"], metric="cosine", weights=weights)
        model.fit(data["train"], data["train_labels"])
        scores[f"knn_{weights}"] = model.score(data["test"], data["test_labels"])

    clusters = KMeans(n_clusters=settings["clusters"], n_init=10, random_state=0)
    predicted = clusters.fit_predict(data["test"])
    truth = data["test_labels"]
    scores["kmeans_nmi"] = normalized_mutual_info_score(truth, predicted)
    scores["kmeans_ari"] = adjusted_rand_score(truth, predicted)
    scores["assigned_nmi"] = normalized_mutual_info_score(truth, data["assignments"])
    scores["assigned_ari"] = adjusted_rand_score(truth, data["assignments"])
    print(json.dumps({name: float(value) for name, value in scores.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
