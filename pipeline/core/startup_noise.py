"""Keeps TensorFlow's and SentencePiece's C++ info logging out of a command's output.

TensorFlow 2.21 logs through absl before absl's logging is initialised, which writes every INFO line
to stderr whatever TF_CPP_MIN_LOG_LEVEL says (`I0000 ... port.cc:153] oneDNN custom operations are on`,
cudart, cpu_feature_guard), once per shared library it loads; SentencePiece inside TF Text logs
`normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty` whenever a graph holding it loads; on a
machine without a GPU, TensorFlow logs its failed CUDA initialisation as an error. None of it can be
turned off from Python, so a command's file descriptor 2 goes through a small filter process that drops
those lines and passes everything else on as it comes: warnings and errors (W/E/F lines, Python's
warnings and logging, tracebacks) still show. The filter is a process, not a thread, so a
fatal C++ error that aborts the command still reaches the terminal, and Beam worker processes, which
inherit the descriptor, are filtered alike.
"""

import contextlib
import logging
import os
import subprocess
import sys

# The filter process's whole program (no site packages: it starts in about 20 ms).
_FILTER = r"""
import re, sys
noise = re.compile(rb"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                   rb"|I\d{4} [\d:.]+ +\d+ [\w.\-]+:\d+\] "
                   rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
                   rb"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: "
                   rb"|[\w.\-]+\.cc\(\d+\) LOG\(INFO\) )")
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not noise.match(line):
        out.write(line)
        out.flush()
"""


@contextlib.contextmanager
def filtered_stderr():
    """Inside, file descriptor 2 (C++ and Python alike) goes through the filter; restored on exit."""
    try:
        os.fstat(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    child = subprocess.Popen([sys.executable, "-S", "-c", _FILTER], stdin=subprocess.PIPE, stdout=original,
                             stderr=original)
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)
        child.stdin.close()
        try:
            child.wait(timeout=10)  # it has passed on every line when it exits
        except subprocess.TimeoutExpired:  # a worker process still holds the pipe: leave the filter to it
            pass


class _BeamMemoryWarning(logging.Filter):
    """Beam 2.77 warns "Resource module is not available for current platform" once per RunInference bundle on
    Linux, where it is: its import of an optional module failed and took `resource` down with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Resource module is not available for current platform")


def quiet_known_warnings() -> None:
    """Drops the Python log warnings that are known to be false (once per process)."""
    root = logging.getLogger()
    if not any(isinstance(f, _BeamMemoryWarning) for f in root.filters):
        root.addFilter(_BeamMemoryWarning())
