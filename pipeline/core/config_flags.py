"""Typed dataclass configs and the one place that turns command-line flags into them."""

import argparse
import dataclasses
import typing


def flag(default, help_text: str):
    """A config field that carries its --help text; `add_flags` builds the flag from it."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def _parser_for(annotation):
    """argparse `type` for a field: scalars as themselves, tuples as comma-separated values."""
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return lambda text: tuple(item(v) for v in text.split(",") if v.strip())
    if annotation is bool:
        return lambda text: text.lower() in ("1", "true", "yes")
    return annotation


def add_flags(parser: argparse.ArgumentParser, config_cls, skip: tuple[str, ...] = (),
              defaults: dict | None = None) -> None:
    """Adds one --flag per field of config_cls, with its default (or the one in `defaults`) and help."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        default = (defaults or {}).get(field.name, field.default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{field.name}", type=_parser_for(hints[field.name]), default=default,
                            help=f"{field.metadata.get('help', '')} (default: {shown})")


def from_args(config_cls, args: argparse.Namespace, **overrides):
    """Builds config_cls from parsed flags; the config's own checks raise ValueError."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(overrides)
    return config_cls(**values)


def parse_known(config_cls, argv: list[str] | None, description: str, epilog: str = ""):
    """A job's command line: its own flags into config_cls, the others (Beam's PipelineOptions) as they are.

    Returns:
      (config, remaining argv).
    """
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, config_cls)
    args, rest = parser.parse_known_args(argv)
    try:
        return from_args(config_cls, args), rest
    except ValueError as e:
        parser.error(str(e))  # one line and the usage, exit code 2
