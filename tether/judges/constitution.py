"""A constitution: the principles an AI judge (RLAIF) and a self-critiquing model (Constitutional AI) follow.

A YAML file::

    name: reviews
    principles:
      - name: positive
        comparison: Which review is more positive about the product the human asked about?
        rating: How positive is this review about the product the human asked about?
        critique: Point out what in the assistant's review is negative, repetitive or off-topic.
        revision: Rewrite the review to be positive and varied, about the product asked for.

``comparison`` is the multiple-choice question of the pairwise judge, ``rating`` the question of the
pointwise judge, ``critique``/``revision`` the requests of the critique–revise loop (Bai et al. 2022,
Appendix C lists the paper's sixteen). A judge uses one principle sampled per comparison or all of them
averaged. ``builtin:NAME`` names a constitution shipped in ``tether/judges/constitutions/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tether import TetherError

BUILTIN = "builtin:"
BUILTIN_DIR = Path(__file__).parent / "constitutions"
FIELDS = ("comparison", "rating", "critique", "revision")


@dataclass(frozen=True)
class Principle:
    name: str
    comparison: str = ""
    rating: str = ""
    critique: str = ""
    revision: str = ""


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]

    def require(self, field: str) -> list[Principle]:
        """The principles that define ``field``; an error naming the constitution when none does."""
        found = [p for p in self.principles if getattr(p, field)]
        if not found:
            raise TetherError(f"constitution '{self.name}': no principle defines '{field}'")
        return found


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_constitution_path(spec: str) -> Path:
    if spec.startswith(BUILTIN):
        name = spec[len(BUILTIN) :]
        path = BUILTIN_DIR / f"{name}.yaml"
        if not path.is_file():
            raise TetherError(f"constitution '{spec}': no such built-in; have {', '.join(builtin_names())}")
        return path
    path = Path(spec)
    if not path.is_file():
        raise TetherError(f"{spec}: no such constitution file")
    return path


def load_constitution(spec: str) -> Constitution:
    """Read and check a constitution; errors name the file, line and field."""
    path = resolve_constitution_path(spec)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise TetherError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None

    def fail(node: yaml.Node | None, field: str, message: str) -> TetherError:
        line = node.start_mark.line + 1 if node is not None else 1
        return TetherError(f"{path}:{line}: field '{field}': {message}")

    if not isinstance(root, yaml.MappingNode):
        raise fail(root, "principles", "expected a mapping with a 'principles' list")
    top = {key.value: value for key, value in root.value}
    listing = top.get("principles")
    if not isinstance(listing, yaml.SequenceNode) or not listing.value:
        raise fail(listing or root, "principles", "expected a non-empty list of principles")
    principles = []
    for index, item in enumerate(listing.value):
        where = f"principles[{index}]"
        if not isinstance(item, yaml.MappingNode):
            raise fail(item, where, "expected a mapping (name, comparison, rating, critique, revision)")
        values: dict[str, str] = {}
        for key, value in item.value:
            if key.value not in ("name", *FIELDS):
                raise fail(key, f"{where}.{key.value}", f"unknown field; valid: name, {', '.join(FIELDS)}")
            if not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
                raise fail(value, f"{where}.{key.value}", "expected a non-empty string")
            values[key.value] = " ".join(str(value.value).split())
        if not any(values.get(f) for f in FIELDS):
            raise fail(item, where, f"a principle needs at least one of {', '.join(FIELDS)}")
        principles.append(Principle(name=values.pop("name", f"principle_{index}"), **values))
    name_node = top.get("name")
    name = str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else path.stem
    return Constitution(name, tuple(principles))
