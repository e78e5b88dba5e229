"""PyTorch references for the digits autoencoder, VAE and SimCLR experiments.

Trains the model of `experiments/digits-{autoencoder,vae,simclr}.toml` with the same
architecture, initialisation (PyTorch's `nn.Linear` default, which pretext reproduces),
hyperparameters and epochs, on the same train/test rows, then prints one JSON object with the
accuracy of scikit-learn's LogisticRegression(max_iter=5000) on the learned codes (the settings of
pretext's `linear_probe` with its defaults).

The rows come from `pretext embed` of a run of `experiments/digits-pixels-baseline.toml`, whose
identity encoder returns the pixels themselves:

    pretext run experiments/digits-pixels-baseline.toml          # note the run id
    pretext embed ID --split train --out DIR/train.npy --labels-out DIR/train_labels.npy
    pretext embed ID --split test --out DIR/test.npy --labels-out DIR/test_labels.npy
    $(scripts/python-env.sh)/bin/python tests/reference/digits_methods.py vae DIR

The random streams (initial weights, shuffles, noise, augmentations) differ from pretext's, so
the two probe accuracies agree only up to seed-to-seed variation.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn


def mlp(widths):
    """Linear layers of the given widths with ReLU between them and none after the last."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        if index > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def batches(count, batch_size, generator):
    order = torch.randperm(count, generator=generator)
    for begin in range(0, count, batch_size):
        yield order[begin : begin + batch_size]


def train_autoencoder(inputs, epochs, generator):
    encoder, decoder = mlp([64, 128, 64, 16]), mlp([16, 64, 128, 64])
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    for _ in range(epochs):
        for rows in batches(len(inputs), 64, generator):
            batch = inputs[rows]
            loss = F.mse_loss(decoder(encoder(batch)), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return encoder


def train_vae(inputs, epochs, generator):
    """ELBO with a Bernoulli likelihood and beta = 1, both terms summed per sample."""
    encoder, decoder = mlp([64, 128, 64, 32]), mlp([16, 64, 128, 64])
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    for _ in range(epochs):
        for rows in batches(len(inputs), 64, generator):
            batch = inputs[rows]
            mean, log_variance = encoder(batch).chunk(2, dim=1)
            code = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
            logits = decoder(code)
            reconstruction = F.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
            kl = -0.5 * torch.sum(1 + log_variance - mean.pow(2) - log_variance.exp())
            loss = (reconstruction + kl) / len(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return lambda data: encoder(data).chunk(2, dim=1)[0]


def augment(images, max_shift=1, mask_fraction=0.2, noise_std=0.1):
    """Random shift by pad-and-crop, then pixel masking, then Gaussian noise."""
    count, _, height, width = images.shape
    padded = F.pad(images, [max_shift] * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (count, 2))
    shifted = torch.stack(
        [
            padded[index, :, top : top + height, left : left + width]
            for index, (top, left) in enumerate(offsets.tolist())
        ]
    )
    masked = shifted.masked_fill(torch.rand_like(shifted) < mask_fraction, 0.0)
    return masked + noise_std * torch.randn_like(masked)


def nt_xent(projections, temperature):
    count = projections.shape[0] // 2
    unit = F.normalize(projections, dim=1)
    logits = unit @ unit.T / temperature
    logits = logits.masked_fill(torch.eye(2 * count, dtype=torch.bool), -1e9)
    targets = (torch.arange(2 * count) + count) % (2 * count)
    return F.cross_entropy(logits, targets)


def train_simclr(inputs, epochs, generator):
    encoder, head = mlp([64, 256, 128]), mlp([128, 128, 64])
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    images = inputs.view(-1, 1, 8, 8)
    for _ in range(epochs):
        for rows in batches(len(images), 256, generator):
            batch = images[rows]
            views = torch.cat([augment(batch), augment(batch)]).flatten(1)
            loss = nt_xent(head(encoder(views)), temperature=0.2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return encoder


METHODS = {"autoencoder": train_autoencoder, "vae": train_vae, "simclr": train_simclr}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("arrays", type=Path, help="folder with train.npy, train_labels.npy, ...")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    names = ["train", "train_labels", "test", "test_labels"]
    missing = [name for name in names if not (args.arrays / f"{name}.npy").is_file()]
    if missing:
        sys.exit(f"missing in {args.arrays}: {', '.join(name + '.npy' for name in missing)}")
    data = {name: np.load(args.arrays / f"{name}.npy") for name in names}
    train = torch.from_numpy(data["train"].astype(np.float32)).flatten(1)
    test = torch.from_numpy(data["test"].astype(np.float32)).flatten(1)

    generator = torch.Generator().manual_seed(args.seed)
    encode = METHODS[args.method](train, args.epochs, generator)
    with torch.no_grad():
        train_codes, test_codes = encode(train).numpy(), encode(test).numpy()
    probe = LogisticRegression(max_iter=5000).fit(train_codes, data["train_labels"])
    report = {
        "method": args.method,
        "probe_accuracy": probe.score(test_codes, data["test_labels"]),
        "epochs": args.epochs,
        "seed": args.seed,
        "train_size": len(train),
        "test_size": len(test),
        "torch_version": torch.__version__,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
