#!/usr/bin/env python3
"""Fit scikit-learn's LogisticRegression on saved embeddings and print its test scores as JSON.

Usage: probe_check.py DIR

DIR contains train.npy ([N, D] floats), train_labels.npy ([N] integers), test.npy and
test_labels.npy. The model is LogisticRegression(max_iter=5000) with every other setting at its
default (L2 penalty, C=1.0, lbfgs). The output is one JSON object with accuracy,
precision_macro, recall_macro and f1_macro, where a class with a zero denominator scores 0 as in
scikit-learn's default. The Rust tests of the linear_probe evaluator run this script.
"""

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

ARRAYS = ("train", "train_labels", "test", "test_labels")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR (containing {', '.join(name + '.npy' for name in ARRAYS)})",
              file=sys.stderr)
        return 2

    folder = Path(argv[1])
    missing = [name for name in ARRAYS if not (folder / f"{name}.npy").is_file()]
    if missing:
        print(f"missing in {folder}: {', '.join(name + '.npy' for name in missing)}",
              file=sys.stderr)
        return 2
    data = {name: np.load(folder / f"{name}.npy") for name in ARRAYS}

    model = LogisticRegression(max_iter=5000)
    model.fit(data["train"], data["train_labels"])
    predicted = model.predict(data["test"])
    precision, recall, f1, _ = precision_recall_fscore_support(
        data["test_labels"], predicted, average="macro", zero_division=0
    )
    scores = {
        "accuracy": accuracy_score(data["test_labels"], predicted),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
    }
    print(json.dumps({name: float(value) for name, value in scores.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
