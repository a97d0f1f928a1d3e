"""Ranker training throughput per representation, and the input pipeline's rate against training's.

For each transform output under RUN_DIR/transform/ (made by `make demo` or `sidrec experiment`),
in one process: the input pipeline alone (read, parse and batch one day of transformed examples),
training on that day held in memory (the step alone), and `model.fit` on the real pipeline. The
input must not be the bottleneck: input examples/s over in-memory training examples/s should be
well above 1, and fit on the real pipeline close to fit from memory. Each representation's training
rate is also given as a ratio to random hashing's: with lazy table updates a step costs the rows
looked up, not the table's size, so bigram's 131,072-row table should train at about random
hashing's rate (at least 0.8 of it).

  python benchmarks/train.py --run_dir runs/demo --out benchmarks/results/train.json
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.core.tf_env import tf  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from models.ranker import ranker_optimizer  # noqa: E402
from pipeline.stages import day_loop  # noqa: E402
from pipeline.core.cards import read_representation  # noqa: E402
from pipeline.core.layout import TransformLayout  # noqa: E402


def _examples_per_s(fn, examples: int) -> float:
    start = time.perf_counter()
    fn()
    return examples / (time.perf_counter() - start)


def measure(transform_dir: str, day: int, config: day_loop.TrainConfig, repeats: int = 3) -> dict:
    card = read_representation(transform_dir)
    dataset = day_loop.day_dataset(transform_dir, day, config.batch_size)
    examples = sum(int(tf.shape(b[next(iter(b))])[0]) for b in dataset)  # also warms the file cache
    input_rate = max(_examples_per_s(lambda: [None for _ in dataset], examples) for _ in range(repeats))
    in_memory = dataset.cache()
    for _ in in_memory:  # fill the cache
        pass
    model = day_loop.build_ranker(card, config)
    model.compile(optimizer=ranker_optimizer(model, config.learning_rate))
    model.fit(in_memory, epochs=1, verbose=0)  # trace the train step once
    step_rate = fit_rate = 0.0
    for _ in range(repeats):  # interleaved, best of each: the machine is shared and noisy
        step_rate = max(step_rate, _examples_per_s(lambda: model.fit(in_memory, epochs=1, verbose=0), examples))
        fit_rate = max(fit_rate, _examples_per_s(lambda: model.fit(dataset, epochs=1, verbose=0), examples))
    return {"representation": card["name"], "examples": examples,
            "input_pipeline_examples_per_s": round(input_rate),
            "training_from_memory_examples_per_s": round(step_rate),
            "fit_on_pipeline_examples_per_s": round(fit_rate),
            "input_to_training": round(input_rate / step_rate, 2),
            "fit_on_pipeline_to_from_memory": round(fit_rate / step_rate, 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join("runs", "demo"))
    parser.add_argument("--day", type=int, default=1, help="the transformed day to train on")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="each rate is the best of this many passes")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    root = os.path.join(args.run_dir, "transform")
    outputs = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else [])
                     if os.path.exists(TransformLayout(os.path.join(root, d)).card))
    if not outputs:
        raise SystemExit(f"{root}: no transform outputs; run `make demo` (or `sidrec experiment`) first")
    config = day_loop.TrainConfig(batch_size=args.batch_size)
    rows = [measure(os.path.join(root, d), args.day, config, args.repeats) for d in outputs]
    # Each representation's training rate against random hashing's, measured in the same run.
    baseline = next((r for r in rows if r["representation"].startswith("random_hash")), None)
    for row in rows:
        if baseline:
            row["training_to_random_hash"] = round(row["training_from_memory_examples_per_s"]
                                                   / baseline["training_from_memory_examples_per_s"], 3)
    for row in rows:
        print(f"{row['representation']:>18}: input {row['input_pipeline_examples_per_s']:>8,}/s, training "
              f"{row['training_from_memory_examples_per_s']:>7,}/s (input/training "
              f"{row['input_to_training']:.1f}x), fit on the pipeline {row['fit_on_pipeline_to_from_memory']:.2f} "
              "of fit from memory", file=sys.stderr)
    return emit({"run_dir": args.run_dir, "day": args.day, "batch_size": args.batch_size, "repeats": args.repeats,
                 "cpus": os.cpu_count(), "representations": rows}, args.out)


if __name__ == "__main__":
    main()
