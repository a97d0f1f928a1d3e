"""TF Serving's model_config_list: which models are served, which of their versions, and version labels.

A model has a base path of integer version directories. Its `model_version_policy` chooses the
versions to serve: `latest { num_versions: N }` (N = 1 by default), `all {}`, or
`specific { versions: ... }`. Its `version_labels` name versions (`stable`, `canary`) that requests
can ask for instead of a number. Read from a text-format ModelServerConfig, as `--model_config_file`
and `ReloadConfig` give it.
"""

import dataclasses
import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.core import files

LATEST, ALL, SPECIFIC = "latest", "all", "specific"
# Label names: letters, digits, '-' and '_', not starting with a digit or '-', so a label never reads as a
# version number in a REST path (/labels/L against /versions/N).
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk a model serves."""

    kind: str = LATEST
    num_versions: int = 1  # for LATEST
    versions: tuple[int, ...] = ()  # for SPECIFIC

    def choose(self, on_disk: list[int]) -> list[int]:
        """The versions to serve, of those on disk (ascending)."""
        if self.kind == ALL:
            return list(on_disk)
        if self.kind == SPECIFIC:
            return [v for v in on_disk if v in self.versions]
        return list(on_disk[-self.num_versions:]) if on_disk else []

    def describe(self) -> str:
        if self.kind == SPECIFIC:
            return f"specific {list(self.versions)}"
        return "all" if self.kind == ALL else f"latest {self.num_versions}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: tuple[tuple[str, int], ...] = ()  # (label, version), sorted by label

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


def _policy(proto, where: str) -> VersionPolicy:
    choice = proto.WhichOneof("policy_choice")
    if choice is None or choice == LATEST:
        num = proto.latest.num_versions if choice == LATEST else 1
        if choice == LATEST and num < 1:
            raise ValueError(f"{where}: model_version_policy latest needs num_versions >= 1, got {num}")
        return VersionPolicy(LATEST, num_versions=num or 1)
    if choice == ALL:
        return VersionPolicy(ALL)
    versions = tuple(sorted(set(proto.specific.versions)))
    if not versions:
        raise ValueError(f"{where}: model_version_policy specific lists no versions")
    return VersionPolicy(SPECIFIC, versions=versions)


def from_proto(config, where: str) -> list[ModelConfig]:
    """The models of a ModelServerConfig message; `where` names it in errors (a file, or 'ReloadConfig')."""
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{where}: expected a model_config_list")
    models = []
    for m in config.model_config_list.config:
        if not m.name or not m.base_path:
            raise ValueError(f"{where}: every model needs a name and a base_path, got name '{m.name}' "
                             f"base_path '{m.base_path}'")
        if m.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{where}: model {m.name}: model_platform must be 'tensorflow', got '{m.model_platform}'")
        for label, version in m.version_labels.items():
            if not _LABEL.match(label):
                raise ValueError(f"{where}: model {m.name}: label '{label}' must be letters, digits, '-' or '_', "
                                 "not starting with a digit or '-'")
            if version < 0:
                raise ValueError(f"{where}: model {m.name}: label '{label}' names version {version}")
        models.append(ModelConfig(m.name, m.base_path, _policy(m.model_version_policy, f"{where}: model {m.name}"),
                                  tuple(sorted(m.version_labels.items()))))
    if not models:
        raise ValueError(f"{where}: model_config_list has no model")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: model names must be unique, got {names}")
    return models


def parse(text: str, where: str) -> list[ModelConfig]:
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{where}: not a text-format ModelServerConfig: {e}") from None
    return from_proto(config, where)


def read_model_config_file(path: str) -> list[ModelConfig]:
    """TF Serving's --model_config_file."""
    return parse(files.read_text(path), path)


def versions_in_use(models: list[ModelConfig], name: str) -> tuple[set[int], int]:
    """What a server with this config needs to keep finding under model `name`'s base path: the versions its
    labels and `specific` policy name, and how many newest versions its `latest` policy serves (1 otherwise)."""
    model = next((m for m in models if m.name == name), None)
    if model is None:
        return set(), 1
    named = set(model.label_map.values()) | (set(model.policy.versions) if model.policy.kind == SPECIFIC else set())
    return named, model.policy.num_versions if model.policy.kind == LATEST else 1
