#!/usr/bin/env python3
"""Write `corpus.txt`: short English sentences drawn from a small fixed grammar.

The corpus exists so that masked modelling has text with structure to learn (word order,
agreement, common spellings) and no licence attached: every sentence comes from the word lists
below. Running the script again writes the same file, because the generator is seeded.

Usage: python3 experiments/data/make_corpus.py [--sentences N]
"""

import argparse
import random
from pathlib import Path

SUBJECTS = ["the cat", "the dog", "a bird", "the farmer", "my sister", "the old man", "a child",
            "the teacher", "our neighbour", "the baker", "a sailor", "the queen"]
VERBS = ["sees", "finds", "likes", "watches", "follows", "paints", "carries", "remembers",
         "visits", "helps", "calls", "feeds"]
OBJECTS = ["the river", "a small house", "the green field", "an apple", "the red door",
           "a long letter", "the quiet garden", "the white horse", "a basket of bread",
           "the tall tree", "the harbour", "a blue boat"]
PLACES = ["in the morning", "at night", "near the market", "after the rain", "by the sea",
          "on sunday", "in the village", "before dinner", "under the bridge", "in winter"]
JOINERS = ["and then", "because", "but", "while", "so"]


def clause(rng):
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.5:
        words.append(rng.choice(PLACES))
    return " ".join(words)


def sentence(rng):
    text = clause(rng)
    if rng.random() < 0.4:
        text += " " + rng.choice(JOINERS) + " " + clause(rng)
    return text[0].upper() + text[1:] + "."


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1500, help="number of sentences")
    args = parser.parse_args()
    rng = random.Random(0)
    lines = [sentence(rng) for _ in range(args.sentences)]
    out = Path(__file__).with_name("corpus.txt")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} sentences to {out}")


if __name__ == "__main__":
    main()
