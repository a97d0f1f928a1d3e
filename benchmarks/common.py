"""What every benchmark shares: the matmul bound of this machine, and printing/saving results."""

import json
import time

from pipeline.core.tf_env import tf


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul rate of this process (the bound every throughput is compared with)."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def emit(results: dict, out: str = "") -> dict:
    """Prints the results as JSON, and writes them to `out` if given."""
    print(json.dumps(results, indent=2))
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results
