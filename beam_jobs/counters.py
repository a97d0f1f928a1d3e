"""Beam metric counters of a finished pipeline, as a plain dict."""


def job_counters(result, namespace: str) -> dict[str, int]:
    """Committed counters of `namespace`, summed over the steps that report the same name."""
    counters: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        if counter.key.metric.namespace == namespace:
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + counter.committed
    return counters
