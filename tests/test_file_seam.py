"""Run artefacts go through one file-system seam (pipeline/core/files.py, Beam's FileSystems in the jobs).

Walks the product code with `ast` for calls that only work on local paths (open(), os.listdir,
os.makedirs, os.path.exists, glob, shutil, Parquet and NumPy on paths, tempfile) and names any that
comes back. A call that is local by design (a worker's scratch directory, the local fast path of a
rename) says so on its line with a `# local` comment, which a reviewer reads.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "models", "beam_jobs", "serving")
SEAM = ROOT / "pipeline" / "core" / "files.py"
LOCAL_ONLY = {
    "open", "os.listdir", "os.makedirs", "os.mkdir", "os.remove", "os.replace", "os.rename", "os.walk", "os.symlink",
    "os.path.exists", "os.path.lexists", "os.path.isdir", "os.path.isfile", "os.path.getsize", "os.path.getmtime",
    "glob.glob", "glob.iglob", "pq.read_table", "pq.write_table", "pq.ParquetFile", "np.load", "np.save",
    "np.savez", "tempfile.mkdtemp", "tempfile.TemporaryDirectory", "tempfile.NamedTemporaryFile",
}
LOCAL_ONLY_MODULES = ("shutil",)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def local_only_calls(source: str, name: str = "<source>") -> list[tuple[int, str]]:
    """(line, call) of every local-only call in `source` whose line does not say `# local`."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Call):
            continue
        called = _dotted(node.func)
        if called in LOCAL_ONLY or called.split(".")[0] in LOCAL_ONLY_MODULES:
            if "# local" not in lines[node.lineno - 1]:
                found.append((node.lineno, called))
    return sorted(found)


def test_no_local_only_file_call_on_a_run_path():
    found = [f"{path.relative_to(ROOT)}:{line}: {call}"
             for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py")) if path != SEAM
             for line, call in local_only_calls(path.read_text(), str(path))]
    assert not found, ("local-only file calls on run paths (use pipeline.core.files, or say `# local` on the line "
                       "where it is local by design):\n" + "\n".join(found))


def test_the_walk_catches_a_planted_call_and_respects_the_marker():
    planted = ("import os, shutil\nimport pyarrow.parquet as pq\n"
               "def write(path, table):\n"
               "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
               "    with open(path, 'w') as f:\n"
               "        f.write('x')\n"
               "    pq.write_table(table, path)\n"
               "    shutil.copy(path, path + '.bak')\n"
               "    os.replace(path, path + '.old')  # local: a rename on the same disk\n")
    assert local_only_calls(planted) == [(4, "os.makedirs"), (5, "open"), (7, "pq.write_table"), (8, "shutil.copy")]
