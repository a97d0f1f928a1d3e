"""The layers' import direction (pipeline/__init__.py): every import points down, never up.

Walks every import of the project's packages with `ast` (function-level imports included), so a
new upward import fails here rather than in a reader's head.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "models", "beam_jobs", "serving")
# Higher may import lower; equal ranks inside one layer may import each other only where listed.
LAYERS = {"pipeline.core": 1, "pipeline.data": 2, "pipeline.sid": 3, "models": 4, "beam_jobs": 4, "serving": 4,
          "pipeline.stages": 5, "pipeline.cli": 5}
# Inside layer 4: beam_jobs and serving build on models, and never on each other.
LAYER_4_MAY_IMPORT = {"models": {"models"}, "beam_jobs": {"models", "beam_jobs"}, "serving": {"models", "serving"}}
# TensorFlow and the libraries that import it come after the set-up in pipeline.core.tf_env.
TF_FAMILY = ("tensorflow", "tf_keras", "tensorflow_recommenders", "tensorflow_transform", "tensorflow_text",
             "tfx_bsl")
TF_SETUP = "pipeline.core.tf_env"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement; `from a import b` gives a.b when b is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _layer(module: str) -> tuple[str, int] | None:
    for prefix, rank in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def _upward_imports(modules: dict[str, pathlib.Path]) -> list[str]:
    """Every import of `modules` (name -> file) that points up or sideways in layer 4."""
    problems = []
    for name, path in modules.items():
        mine = _layer(name)
        if mine is None:
            continue  # the pipeline package's docstring
        for line, imported in _imports(path):
            theirs = _layer(imported)
            if theirs is None:
                continue
            if theirs[1] > mine[1]:
                problems.append(f"{path}:{line}: {name} (layer {mine[1]}) imports {imported} (layer {theirs[1]})")
            elif mine[1] == theirs[1] == 4 and theirs[0] not in LAYER_4_MAY_IMPORT[mine[0]]:
                problems.append(f"{path}:{line}: {mine[0]} imports {theirs[0]}")
    return problems


def test_every_import_points_down():
    assert _upward_imports(_modules()) == []


def test_models_beam_jobs_and_serving_never_import_the_stages_or_the_cli():
    for name, path in _modules().items():
        if name.split(".")[0] in ("models", "beam_jobs", "serving"):
            imported = [m for _, m in _imports(path)]
            assert not [m for m in imported if m.startswith(("pipeline.stages", "pipeline.cli"))], name


def test_the_walker_sees_an_upward_import(tmp_path):
    """The check itself: a base module importing a stage (inside a function) and serving importing a Beam job."""
    core, server = tmp_path / "bad_core.py", tmp_path / "bad_server.py"
    core.write_text("def f():\n    from pipeline.stages import day_loop\n")
    server.write_text("from pipeline.core import layout\nimport beam_jobs.transform\n")
    problems = _upward_imports({"pipeline.core.bad": core, "serving.bad": server})
    assert problems == [f"{core}:2: pipeline.core.bad (layer 1) imports pipeline.stages.day_loop (layer 5)",
                        f"{server}:2: serving imports beam_jobs"]


@pytest.mark.parametrize("name", sorted(n for n in _modules() if n != TF_SETUP))
def test_tensorflow_comes_through_the_set_up(name):
    """No module imports TensorFlow itself; one that imports a library built on it imports the set-up first."""
    imports = _imports(_modules()[name])
    direct = [(line, m) for line, m in imports if m in ("tensorflow", "tf_keras")]
    assert direct == [], f"{name}: import tf from {TF_SETUP} instead"
    family = [line for line, m in imports if m.split(".")[0] in TF_FAMILY]
    setup = [line for line, m in imports if m.startswith(TF_SETUP)]
    if family:
        assert setup and min(setup) < min(family), f"{name}: import {TF_SETUP} before {TF_FAMILY}"
