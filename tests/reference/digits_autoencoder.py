"""PyTorch eager reference for the digits autoencoder experiment.

Trains the same model on the same data as the Rust run: digits pixels divided by 16, an MLP
encoder 64-128-64-16 with ReLU, a mirrored decoder 16-64-128-64, MSE, Adam (lr 1e-3), batch 64,
100 epochs, reshuffled every epoch. Prints one JSON object with the test MSE, the accuracy of a
logistic-regression probe on the 16-d codes, and training steps per second.

Usage (from the repository root):

    $(scripts/python-env.sh)/bin/python tests/reference/digits_autoencoder.py [--split DIR]

`--split DIR` reads `train.npy` and `test.npy` from DIR: 1-D integer arrays of row indices into
the digits CSV, such as the split a Rust run used. Without it, the script makes an 80/20 split
stratified by label with scikit-learn (`random_state=0`), which differs from the Rust split.
"""

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[2]

# The copy committed with the dataset plugin, then the workspace's shared data folder.
DIGITS_CANDIDATES = [
    REPO_ROOT / "plugins" / "datasets" / "data" / "digits.csv.gz",
    REPO_ROOT.parent / "shared" / "data" / "digits.csv.gz",
]

ENCODER_WIDTHS = [64, 128, 64, 16]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, help="folder with train.npy and test.npy row indices")
    parser.add_argument("--data", type=Path, help="gzip digits CSV (default: the repository copy)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (set_num_threads)")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for init and shuffling")
    return parser.parse_args()


def find_digits(explicit):
    if explicit is not None:
        return explicit
    for candidate in DIGITS_CANDIDATES:
        if candidate.is_file():
            return candidate
    names = ", ".join(str(path) for path in DIGITS_CANDIDATES)
    sys.exit(f"digits data not found, looked in: {names}; pass --data PATH")


def load_digits(path):
    """Return pixels scaled to [0, 1] as float32 `[n, 64]` and labels as int64 `[n]`."""
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    pixels = (table[:, :64] / 16.0).astype(np.float32)
    labels = table[:, 64].astype(np.int64)
    return pixels, labels


def load_indices(folder, name, count):
    path = folder / f"{name}.npy"
    indices = np.load(path)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        found = f"{indices.dtype} array of shape {indices.shape}"
        sys.exit(f"{path} is invalid: expected a 1-D integer array, found a {found}")
    if indices.size == 0 or indices.min() < 0 or indices.max() >= count:
        sys.exit(f"{path} is invalid: expected a non-empty array of row indices in [0, {count})")
    return indices.astype(np.int64)


def split_indices(args, labels):
    count = len(labels)
    if args.split is not None:
        train = load_indices(args.split, "train", count)
        test = load_indices(args.split, "test", count)
        if np.intersect1d(train, test).size:
            sys.exit(f"split in {args.split} is invalid: train and test share rows")
        return train, test
    return train_test_split(np.arange(count), test_size=0.2, stratify=labels, random_state=0)


def mlp(widths):
    """Build linear layers of the given widths with ReLU between them and none after the last."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        if index > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def train(encoder, decoder, inputs, epochs, generator):
    """Run the training loop and return (optimizer steps, seconds)."""
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    batch_size = 64
    steps = 0

    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for begin in range(0, len(inputs), batch_size):
            batch = inputs[order[begin : begin + batch_size]]
            loss = nn.functional.mse_loss(decoder(encoder(batch)), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - start
    return steps, seconds


def main():
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    data_path = find_digits(args.data)
    pixels, labels = load_digits(data_path)
    train_rows, test_rows = split_indices(args, labels)
    train_inputs = torch.from_numpy(pixels[train_rows])
    test_inputs = torch.from_numpy(pixels[test_rows])

    encoder = mlp(ENCODER_WIDTHS)
    decoder = mlp(ENCODER_WIDTHS[::-1])
    generator = torch.Generator().manual_seed(args.seed)
    steps, seconds = train(encoder, decoder, train_inputs, args.epochs, generator)

    with torch.no_grad():
        test_mse = nn.functional.mse_loss(decoder(encoder(test_inputs)), test_inputs).item()
        train_codes = encoder(train_inputs).numpy()
        test_codes = encoder(test_inputs).numpy()
    probe = LogisticRegression(max_iter=5000).fit(train_codes, labels[train_rows])
    probe_accuracy = probe.score(test_codes, labels[test_rows])

    report = {
        "test_mse": test_mse,
        "probe_accuracy": probe_accuracy,
        "steps_per_second": steps / seconds,
        "train_steps": steps,
        "train_seconds": seconds,
        "steps_per_epoch": math.ceil(len(train_rows) / 64),
        "epochs": args.epochs,
        "train_size": len(train_rows),
        "test_size": len(test_rows),
        "split": str(args.split) if args.split is not None else "sklearn-stratified-80-20-rs0",
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "torch_version": torch.__version__,
        "data": str(data_path),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
