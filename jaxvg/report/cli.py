"""Command lines from frozen dataclass configs: one `--flag` per field, help from the field comment.

Every experiment and benchmark has a frozen dataclass `Config` whose fields carry their help text
as a comment on the same line (as flax's gemma example does above each field)::

    @dataclasses.dataclass(frozen=True)
    class Config:
        depth: int = 50                      # hidden layers
        activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")
        quick: bool = False                  # tiny sizes for tests/CI
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {"depth": 200}}
        QUICK: ClassVar[dict[str, Any]] = {"depth": 3}

and `cli.parse(Config, argv)` turns it into `--depth 50`, `--activations tanh relu`,
`--quick/--no-quick` and `--preset full`.

Why a small helper and not tyro: tyro would be a runtime dependency (with its own dependencies)
for about 200 lines of argparse, and it reads help text from docstrings and `Annotated` metadata,
whereas jaxvg's convention is the trailing comment, which keeps a config readable as a plain
table of name, type, default and meaning. argparse is in the standard library, its `--help` output
is familiar, and the mapping from annotation to flag is small enough to test completely.

Rules:
- `field_name` gives `--field-name`; `--field_name` is accepted too.
- Types from the annotation: `int`, `float`, `str`; `bool` as `--flag/--no-flag`;
  `tuple[X, ...]` (X in int, float, str) as one flag taking one or more values; `Literal[...]` as
  choices; `X | None` takes the word `none` for None.
- Help text: the comment after the field in the class source (`inspect.getsource`), else comment
  lines directly above it, else `field.metadata["help"]`; the default is appended.
- `--preset NAME` when the class has a `PRESETS` class attribute (a dict of name -> field overrides).
  Explicit flags win over the preset; the preset wins over the defaults. A class with `PRESETS`
  cannot also have a field named `preset` (both would be `--preset`).
- `--quick` is the `quick` field; the class applies its `QUICK` class attribute (field -> value)
  in `__post_init__` (`jaxvg.report.experiment.apply_quick`). While `parse` builds the config,
  `given_fields()` names the fields set by explicit flags, so that quick values replace every
  other field (defaults and preset values) and never a flag the user typed, whatever its value.
  The `--quick` help lists the `QUICK` values.
- `--help` prints the first paragraph of the config's module docstring, then the flags, then the
  rest of the docstring.
- The dataclass's own validation (`__post_init__`) runs on the parsed values; its ValueError or
  TypeError becomes an argparse error (exit status 2) naming the flag whose field the message
  names in backticks.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import contextvars
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["field_help", "given_fields", "make_parser", "parse"]

T = TypeVar("T")
_NONE_WORDS = ("none", "None", "null")
_PRESET_DEST = "cli:preset"  # argparse dest of --preset: never a field name
# (config class, names of the fields set by explicit flags) while `parse` builds a config
_GIVEN: contextvars.ContextVar[tuple[type, frozenset[str]] | None] = contextvars.ContextVar(
    "jaxvg_cli_given", default=None
)


def parse(config_cls: type[T], argv: Sequence[str] | None = None) -> T:
    """Parse `argv` (default `sys.argv[1:]`) into an instance of the dataclass `config_cls`.

    Args:
      config_cls: a dataclass (usually frozen) whose fields have defaults (fields without one
        become required flags). Optional class attribute `PRESETS`: dict of preset name -> dict of
        field overrides, selected with `--preset NAME`.
      argv: the command-line arguments, without the program name.

    Returns:
      `config_cls(**values)`, where values are, by precedence: explicit flags, then (with `--quick`)
      the class's `QUICK` values as its `__post_init__` applies them, then the preset, then the
      field defaults.

    Raises:
      SystemExit: (from argparse, status 2) for an unknown flag, a value of the wrong type, an
        unknown preset, or a value the config's `__post_init__` rejects; the message names the flag.
        `--help` exits with status 0.
      TypeError: if `config_cls` is not a dataclass, or a field's annotation has no flag mapping
        (a programming error, not a user error).
    """
    parser, flags = _build(config_cls)
    namespace = parser.parse_args(argv)
    explicit = vars(namespace)
    preset_name = explicit.pop(_PRESET_DEST, None)
    kwargs: dict[str, Any] = {}
    if preset_name is not None:
        for name, value in _presets(config_cls)[preset_name].items():
            kwargs[name] = _coerce(flags[name].annotation, value)
    kwargs.update({name: _coerce(flags[name].annotation, value) for name, value in explicit.items()})
    missing = [flag.option for flag in flags.values() if flag.required and flag.name not in kwargs]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        with _given(config_cls, frozenset(explicit)):
            return config_cls(**kwargs)
    except (ValueError, TypeError) as err:
        parser.error(_flag_message(str(err), flags, explicit, preset_name))
    raise SystemExit(2)  # not reached: parser.error exits


def given_fields(config: Any) -> frozenset[str] | None:
    """The fields of `config` that explicit command-line flags set, while `parse` builds it.

    For use in a config's `__post_init__` (as `jaxvg.report.experiment.apply_quick` does): the
    names of the fields given as flags when `parse` is constructing an instance of `config`'s class,
    else None (a config built in Python, or another class built meanwhile).
    """
    current = _GIVEN.get()
    if current is None or type(config) is not current[0]:
        return None
    return current[1]


@contextlib.contextmanager
def _given(config_cls: type, names: frozenset[str]):
    token = _GIVEN.set((config_cls, names))
    try:
        yield
    finally:
        _GIVEN.reset(token)


def make_parser(config_cls: type) -> argparse.ArgumentParser:
    """The `argparse.ArgumentParser` that `parse` uses (for `--help` text or embedding).

    Every flag's argparse default is `argparse.SUPPRESS`, so the namespace holds only flags that
    were given; the dataclass default is shown in the help text.
    """
    return _build(config_cls)[0]


def field_help(config_cls: type) -> dict[str, str]:
    """{field name: help text} from the comments in `config_cls`'s source, else the fields'
    `metadata["help"]`; fields with neither are absent. Never raises for a missing source."""
    comments = _source_comments(config_cls)
    out = {}
    for f in dataclasses.fields(config_cls):
        text = comments.get(f.name) or f.metadata.get("help")
        if text:
            out[f.name] = str(text)
    return out


# --------------------------------------------------------------------------- internals


@dataclasses.dataclass(frozen=True)
class _Flag:
    name: str
    option: str
    annotation: Any
    required: bool


def _presets(config_cls: type) -> Mapping[str, Mapping[str, Any]]:
    presets = getattr(config_cls, "PRESETS", None)
    return presets if isinstance(presets, Mapping) else {}


def _quick(config_cls: type) -> Mapping[str, Any]:
    quick = getattr(config_cls, "QUICK", None)
    return quick if isinstance(quick, Mapping) else {}


def _description(config_cls: type) -> tuple[str | None, str | None]:
    """(first paragraph, the rest) of the docstring of the module that defines `config_cls`."""
    module = sys.modules.get(config_cls.__module__)
    doc = inspect.cleandoc(getattr(module, "__doc__", None) or "")
    if not doc:
        return None, None
    first, _, rest = doc.partition("\n\n")
    return " ".join(first.split()), (rest.strip() or None)


def _build(config_cls: type) -> tuple[argparse.ArgumentParser, dict[str, _Flag]]:
    if not (dataclasses.is_dataclass(config_cls) and isinstance(config_cls, type)):
        raise TypeError(f"`config_cls` must be a dataclass class, got {config_cls!r}.")
    description, epilog = _description(config_cls)
    spec = getattr(sys.modules.get(config_cls.__module__), "__spec__", None)
    parser = argparse.ArgumentParser(
        prog=f"python -m {spec.name}" if config_cls.__module__ == "__main__" and spec else None,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    hints = typing.get_type_hints(config_cls, include_extras=False)
    helps = field_help(config_cls)
    flags: dict[str, _Flag] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        annotation = hints.get(f.name, f.type)
        option = "--" + f.name.replace("_", "-")
        default = _default(f)
        help_text = helps.get(f.name, "")
        help_text = (help_text + " " if help_text else "") + (
            f"(default: {_show(default)})" if default is not dataclasses.MISSING else "(required)"
        )
        if f.name == "quick" and _quick(config_cls):
            help_text += "; sets " + ", ".join(f"{k}={_show(v)}" for k, v in _quick(config_cls).items())
        kwargs = _argparse_kwargs(f.name, annotation)
        kwargs["help"] = help_text.replace("%", "%%")
        kwargs["dest"] = f.name
        parser.add_argument(option, **kwargs)
        if "_" in f.name:  # also accept --field_name, without listing it twice in --help
            parser.add_argument(f"--{f.name}", **{**kwargs, "help": argparse.SUPPRESS})
        flags[f.name] = _Flag(f.name, option, annotation, default is dataclasses.MISSING)
    presets = _presets(config_cls)
    overlays = {f"PRESETS[{name!r}]": overrides for name, overrides in presets.items()}
    overlays["QUICK"] = _quick(config_cls)
    for where, overrides in overlays.items():
        unknown = sorted(set(overrides) - set(flags))
        if unknown:
            raise TypeError(
                f"{config_cls.__name__}.{where} sets unknown fields {unknown}; fields are {sorted(flags)}."
            )
    if presets:
        if "preset" in flags:
            raise TypeError(
                f"{config_cls.__name__} has both `PRESETS` and a field named `preset`: both would be "
                "--preset; rename the field."
            )
        listing = "; ".join(
            f"{name}: " + ", ".join(f"{k}={_show(v)}" for k, v in overrides.items())
            for name, overrides in presets.items()
        )
        parser.add_argument(
            "--preset",
            choices=list(presets),
            dest=_PRESET_DEST,
            help=f"named set of overrides; explicit flags win over it ({listing})".replace("%", "%%"),
        )
    return parser, flags


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) if value else "()"
    return str(value)


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        raise TypeError(f"Unsupported union annotation {annotation!r}: use `X | None`.")
    return annotation, False


def _scalar_parser(name: str, tp: Any, optional: bool) -> tuple[Any, dict[str, Any]]:
    """(argparse `type` callable, extra kwargs such as choices) for a scalar type."""
    extra: dict[str, Any] = {}
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        kinds = {type(c) for c in choices}
        base = kinds.pop() if len(kinds) == 1 else str
        extra["choices"] = list(choices) + ([None] if optional else [])
        tp = base
    if tp is bool:
        convert: Any = _parse_bool
    elif tp in (int, float, str):
        convert = tp
    else:
        raise TypeError(f"Field `{name}`: no command-line flag for annotation {tp!r}.")

    if not optional:
        return convert, extra

    def optional_convert(text: str) -> Any:
        return None if text in _NONE_WORDS else convert(text)

    optional_convert.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return optional_convert, extra


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _argparse_kwargs(name: str, annotation: Any) -> dict[str, Any]:
    inner, optional = _split_optional(annotation)
    if inner is bool and not optional:
        return {"action": argparse.BooleanOptionalAction}
    origin = typing.get_origin(inner)
    if origin in (tuple, list, Sequence):
        args = typing.get_args(inner)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item, nargs = args[0], "+"
        elif origin is tuple and args and Ellipsis not in args and len(set(args)) == 1:
            item, nargs = args[0], len(args)
        elif origin is not tuple and len(args) == 1:
            item, nargs = args[0], "+"
        else:
            raise TypeError(f"Field `{name}`: no command-line flag for annotation {annotation!r}.")
        convert, extra = _scalar_parser(name, item, optional)
        if optional:
            extra.pop("choices", None)
            nargs = "+"
        return {"type": convert, "nargs": nargs, "metavar": _metavar(item), **extra}
    convert, extra = _scalar_parser(name, inner, optional)
    return {"type": convert, **({"metavar": _metavar(inner)} if "choices" not in extra else {}), **extra}


def _metavar(tp: Any) -> str:
    return getattr(tp, "__name__", "VALUE").upper()


def _coerce(annotation: Any, value: Any) -> Any:
    """Lists from nargs (or a preset) -> tuples for tuple fields; ["none"] -> None for optionals."""
    inner, optional = _split_optional(annotation)
    if isinstance(value, list):
        if optional and any(v is None for v in value):
            return None
        if typing.get_origin(inner) is tuple:
            return tuple(value)
    if isinstance(value, tuple) and typing.get_origin(inner) is list:
        return list(value)
    return value


def _flag_message(
    message: str, flags: Mapping[str, _Flag], explicit: Mapping[str, Any], preset: str | None
) -> str:
    """Name the flag whose field the validation message mentions (`name` in backticks)."""
    for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", message):
        if name in flags:
            source = "" if name in explicit or preset is None else f" (set by --preset {preset})"
            return f"argument {flags[name].option}{source}: {message}"
    return message


def _source_comments(config_cls: type) -> dict[str, str]:
    """{field: comment} from the class source: the comment ending a field's line, else the
    full-line comments directly above it. {} when the source is unavailable."""
    try:
        source = textwrap.dedent(inspect.getsource(config_cls))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError, IndentationError):
        return {}
    lines = source.splitlines()
    trailing: dict[int, str] = {}
    full_line: dict[int, str] = {}
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        row, col = tok.start
        text = tok.string.lstrip("#").strip()
        if lines[row - 1][:col].strip():
            trailing[row] = text
        else:
            full_line[row] = text
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if not classes:
        return {}
    comments: dict[str, str] = {}
    for stmt in classes[0].body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        end = stmt.end_lineno or stmt.lineno
        parts = [trailing[r] for r in range(stmt.lineno, end + 1) if r in trailing]
        if not parts:
            row, above = stmt.lineno - 1, []
            while row in full_line:
                above.insert(0, full_line[row])
                row -= 1
            parts = above
        text = " ".join(p for p in parts if p)
        if text:
            comments[stmt.target.id] = text
    return comments
