"""Atomic outputs: a job writes into a staging directory that replaces the output only on success."""

import os
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems


def staging_dir(output: str) -> str:
    """A fresh sibling of output on the same filesystem (so the final move is a rename)."""
    return f"{output.rstrip('/')}.staging-{uuid.uuid4().hex[:12]}"


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def publish(staging: str, output: str) -> None:
    """Replaces output by staging. Local: one directory rename; object stores: file by file."""
    if _is_local(output):
        backup = None
        if os.path.exists(output):
            backup = staging_dir(output) + ".old"
            os.replace(output, backup)
        os.replace(staging, output)
        if backup:
            shutil.rmtree(backup, ignore_errors=True)
        return
    if FileSystems.exists(output):
        FileSystems.delete([output])
    sources = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
    FileSystems.rename(sources, [output + s[len(staging):] for s in sources])
    FileSystems.delete([staging])


def discard(staging: str) -> None:
    """Removes a failed run's staging directory; the output is left as it was."""
    if _is_local(staging):
        shutil.rmtree(staging, ignore_errors=True)
    elif FileSystems.exists(staging):
        FileSystems.delete([staging])
