"""The config reference table of README.md, generated from the pydantic models (one source of truth)."""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel

from orchestration.config import TrainJobConfig


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    defaults = model()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, key + "."))
            continue
        default = getattr(defaults, name)
        rows.append((key, _type_name(annotation), json.dumps(default), field.description or ""))
    return rows


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """``readme`` with the table between the config-reference markers regenerated."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{config_reference_markdown()}\n{END}{tail}"


def config_reference_markdown() -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, type_name, default, description in _rows(TrainJobConfig):
        lines.append(f"| `{key}` | {type_name} | `{default}` | {description.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys
    from pathlib import Path

    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        target = Path(sys.argv[2])
        target.write_text(readme_with_reference(target.read_text()))
    else:
        print(config_reference_markdown())  # noqa: T201
