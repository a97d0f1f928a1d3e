"""Fingerprints of stage outputs: what an output was made from, so a rerun never reports stale numbers.

Every stage output (SID table, transform output, ranker run) holds `fingerprint.json`: the inputs
that decide its content (upstream fingerprints, file digests, the config that changes the result)
and their hash. A rerun reuses an output only when the hash is equal; otherwise it rebuilds it (or,
with `--if_changed refuse`, stops), saying in one line what changed.
"""

import hashlib
import json
import os

from pipeline.core.layout import FINGERPRINT_FILE

POLICIES = ("rebuild", "refuse")
_CHUNK = 4 << 20


class StaleOutputError(ValueError):
    """An output was made from other inputs and the policy is to refuse rather than rebuild."""


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def digest_files(paths: list[str]) -> str:
    """The hash of the files' names (basenames) and bytes, in sorted order; [] hashes to a constant."""
    from pipeline.core.tf_env import tf

    sha = hashlib.sha256()
    for path in sorted(paths):
        sha.update(os.path.basename(path).encode("utf-8") + b"\0")
        with tf.io.gfile.GFile(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
    return sha.hexdigest()[:16]


class Fingerprint:
    """The inputs of one output (a JSON-able dict, nested dicts allowed) and their hash."""

    def __init__(self, inputs: dict):
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True))  # tuples -> lists, as on disk
        self.value = _hash(self.inputs)

    def write(self, directory: str) -> None:
        from pipeline.core.tf_env import tf

        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(os.path.join(directory, FINGERPRINT_FILE), "w") as f:
            json.dump({"fingerprint": self.value, "inputs": self.inputs}, f, indent=2, sort_keys=True)


def read(directory: str) -> dict | None:
    """{"fingerprint", "inputs"} of an output, or None if it has none."""
    from pipeline.core.tf_env import tf

    path = os.path.join(directory, FINGERPRINT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _flat(inputs: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in inputs.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def changes(old: dict, new: dict) -> list[str]:
    """'key old -> new' for every input that differs (nested keys dotted)."""
    old, new = _flat(old), _flat(new)
    return [f"{key} {old.get(key, '(none)')} -> {new.get(key, '(none)')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def up_to_date(directory: str, fingerprint: Fingerprint, policy: str, what: str, log=print) -> bool:
    """True if `directory` holds an output made from exactly these inputs (reuse it).

    Otherwise it must be (re)built: says why in one line, or raises under the "refuse" policy.

    Raises:
      StaleOutputError: the output exists, was made from other inputs, and `policy` is "refuse".
      ValueError: an unknown policy.
    """
    from pipeline.core.tf_env import tf

    if policy not in POLICIES:
        raise ValueError(f"if_changed must be one of {POLICIES}, got {policy!r}")
    if not tf.io.gfile.exists(directory):
        return False
    old = read(directory)
    if old is not None and old["fingerprint"] == fingerprint.value:
        return True
    reason = ("it has no fingerprint (made before fingerprints, or interrupted)" if old is None
              else "changed: " + "; ".join(changes(old["inputs"], fingerprint.inputs)))
    if policy == "refuse":
        raise StaleOutputError(f"{what} {directory} was made from other inputs ({reason}); "
                               "rerun with --if_changed rebuild to rebuild it")
    log(f"{what} {directory}: rebuilding, {reason}")
    return False
