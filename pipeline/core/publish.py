"""Versions and atomic outputs: integer version directories, and outputs that appear whole or not at all.

Every stage writes into a staging sibling that replaces the output only on success, so a reader, or a
TF Serving instance polling a base path, never sees half of one. Local paths move by one rename. On
an object store (gs://, or any URL scheme), where a rename is a copy per object, the staged files are moved
one by one with the completion markers last: saved_model.pb (what TF Serving and `list_versions` wait
for before a version counts) and fingerprint.json (what a rerun checks before reusing an output).
Version directories are named by integers, as TF Serving expects; a staging name is never an integer,
so servers and `list_versions` ignore it.
"""

import contextlib
import os
import shutil
import uuid

from pipeline.core import files
from pipeline.core.contracts import MissingOutputError
from pipeline.core.tf_env import tf


def absolute_path(path: str) -> str:
    """A local path made absolute (a card that records it stays valid from any working directory); URLs as given."""
    return os.path.abspath(path) if files.is_local(path) else path


def staging_path(output: str) -> str:
    """A fresh sibling of `output` on the same filesystem (so the final move is a rename).

    Its name starts with ".staging-" rather than with the output's name: a store whose directories are
    key prefixes (ram://) would otherwise see the output as present while its staging sibling exists.
    """
    head, _, name = output.rstrip("/").rpartition("/")
    staged = f".staging-{uuid.uuid4().hex[:12]}-{name}"
    return f"{head}/{staged}" if head else staged


# Files that say an output is complete: moved last on object stores.
COMPLETION_MARKERS = ("saved_model.pb", "fingerprint.json")


def publish(staging: str, output: str) -> None:
    """Replaces `output` (a file or a directory) by `staging`."""
    if files.is_local(output):
        backup = None
        if os.path.isdir(output):  # local: one rename each way
            backup = staging_path(output) + ".old"
            os.replace(output, backup)  # local
        os.replace(staging, output)  # local
        if backup:
            shutil.rmtree(backup, ignore_errors=True)  # local
        return
    files.remove(output)
    if not tf.io.gfile.isdir(staging):
        tf.io.gfile.rename(staging, output, overwrite=True)
        return
    moves = [(f"{directory.rstrip('/')}/{name}", f"{(output + directory[len(staging):]).rstrip('/')}/{name}")
             for directory, _, names in tf.io.gfile.walk(staging) for name in names]
    for source, target in sorted(moves, key=lambda move: move[0].rsplit("/", 1)[-1] in COMPLETION_MARKERS):
        tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
        tf.io.gfile.rename(source, target, overwrite=True)
    files.remove(staging)


def discard(staging: str) -> None:
    """Removes a failed run's staging output; the published output is left as it was."""
    files.remove(staging)


@contextlib.contextmanager
def published(output: str):
    """Yields a staging path to write; on success it replaces `output`, on failure it is removed.

      with published(path) as staging:
          write(staging)
    """
    staging = staging_path(output)
    parent = os.path.dirname(staging)
    if parent:
        tf.io.gfile.makedirs(parent)
    try:
        yield staging
    except BaseException:
        discard(staging)
        raise
    publish(staging, output)


def list_versions(base: str, marker: str = "saved_model.pb") -> list[int]:
    """The integer version directories under `base` that hold `marker`, ascending (what TF Serving sees)."""
    if not tf.io.gfile.isdir(base):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(base))
    return sorted(int(name) for name in names
                  if name.isdigit() and tf.io.gfile.exists(os.path.join(base, name, marker)))


def latest_version(path: str, what: str, make_with: str) -> str:
    """`path` itself if it is a version (holds saved_model.pb), else its newest integer version.

    Raises:
      MissingOutputError: there is none, naming the command that makes one.
    """
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    found = list_versions(path)
    if not found:
        raise MissingOutputError(what, path, make_with)
    return os.path.join(path, str(found[-1]))


def publish_version(source: str, base: str, card: dict, card_path, keep: int, protected=frozenset()) -> int:
    """Publishes the export `source` as BASE/<newest + 1> and keeps the newest `keep` versions and `protected`.

    The version appears whole (staged, then renamed), with `card` written at `card_path(version dir)`
    inside it; versions only increase, and the newest (the one a server serves) is never deleted, nor
    a version in `protected` (one a server's labels or version policy name).

    Returns:
      The version published.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the served version stays), got {keep}")
    existing = list_versions(base)
    version = (existing[-1] if existing else 0) + 1
    with published(os.path.join(base, str(version))) as staging:
        files.copy_tree(source, staging)
        files.write_json(card_path(staging), {**card, "version": version})
    for old in list_versions(base)[:-keep]:
        if old not in protected:
            files.remove(os.path.join(base, str(old)))
    return version
