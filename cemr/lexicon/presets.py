"""Lexicon presets: the shared public term lists under ``<data_dir>/lexicons`` mapped to one
corpus's entity types.

The presets are data. Each file ``cemr/lexicon/presets/<corpus>.yaml`` defines the preset
``<corpus>`` and, when it has ``noisy_sources``, ``<corpus>_all`` (the same lists plus those); the
files also give the measurements behind their choices. Keys of a file:

* ``types`` (required): the corpus's types in tie-break order;
* ``sources`` (required): the lists, each ``{path, format: lines|csv, type, type_map}`` as a
  :class:`~cemr.config.LexiconSource` (``path`` relative to the lexicons directory);
* ``noisy_sources``: lists added only by ``<corpus>_all``;
* ``stopword_files``: lists whose lines are added to the stop words;
* ``retype``: rules ``{pattern, from, to}``: a list term of type ``from`` matching the regex
  ``pattern`` gets type ``to``.

Every type a file names must be one of its ``types``. The files are read and checked at import
(:data:`PRESETS`); a malformed one raises :class:`PresetError` naming the file and the key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Protocol

import yaml

from cemr.config import LexiconSource, data_dir
from cemr.lexicon.sources import FORMATS, Retype


@dataclass(frozen=True)
class Preset:
    """A named set of the public lists under ``<data_dir>/lexicons`` with their codes mapped to
    one corpus's types.

    ``types`` is the corpus's type set in tie-break order; ``sources`` the lists (paths relative
    to the lexicons directory); ``stopword_files`` lists whose lines are added to the stop words;
    ``retype`` rules ``(regex, from_type, to_type)`` refine list types (not training mentions).
    """

    name: str
    types: tuple[str, ...]
    sources: tuple[LexiconSource, ...]
    stopword_files: tuple[str, ...] = ()
    retype: tuple[tuple[str, str, str], ...] = ()

    def resolved_sources(self, root: str) -> list[LexiconSource]:
        return [LexiconSource(os.path.join(root, s.path), s.format, s.type, dict(s.type_map)) for s in self.sources]

    def retyper(self) -> Retype | None:
        if not self.retype:
            return None
        rules = [(re.compile(p), a, b) for p, a, b in self.retype]

        def retype(term: str, type_: str) -> str:
            for pattern, from_type, to_type in rules:
                if type_ == from_type and pattern.search(term):
                    return to_type
            return type_

        return retype


class PresetError(ValueError):
    """A preset file that cannot be read or breaks the schema; the message names the file and key."""


class _File(Protocol):
    """What the loader needs of a preset file: a :class:`pathlib.Path` or an importlib Traversable."""

    name: str

    def read_text(self, encoding: str = ...) -> str: ...


_FILE_KEYS = ("types", "sources", "noisy_sources", "stopword_files", "retype")
_SOURCE_KEYS = ("path", "format", "type", "type_map")
_RETYPE_KEYS = ("pattern", "from", "to")


def _mapping(value: Any, where: str, key: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise PresetError(f"{where}: {key}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - set(allowed), key=str)
    if unknown:
        raise PresetError(f"{where}: {key}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise PresetError(f"{where}: {key}: missing key(s) {', '.join(missing)}")
    return value


def _list(value: Any, where: str, key: str) -> list:
    if not isinstance(value, list):
        raise PresetError(f"{where}: {key}: expected a list, got {value!r}")
    return value


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise PresetError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    return value


def _type(value: Any, where: str, key: str, types: tuple[str, ...]) -> str:
    if _text(value, where, key) not in types:
        raise PresetError(f"{where}: {key}: type {value!r} is not one of the file's types "
                          f"({', '.join(types)}); add it to types or correct it")
    return value


def _source(value: Any, where: str, key: str, types: tuple[str, ...]) -> LexiconSource:
    entry = _mapping(value, where, key, _SOURCE_KEYS, ("path",))
    format_ = entry.get("format", "lines")
    if format_ not in FORMATS:
        raise PresetError(f"{where}: {key}.format: expected {' or '.join(FORMATS)}, got {format_!r}")
    type_ = entry.get("type")
    type_map = entry.get("type_map", {})
    if not isinstance(type_map, dict):
        raise PresetError(f"{where}: {key}.type_map: expected a mapping, got {type_map!r}")
    return LexiconSource(
        _text(entry["path"], where, f"{key}.path"),
        format_,
        None if type_ is None else _type(type_, where, f"{key}.type", types),
        {_text(code, where, f"{key}.type_map"): _type(t, where, f"{key}.type_map.{code}", types)
         for code, t in type_map.items()},
    )


def _sources(value: Any, where: str, key: str, types: tuple[str, ...]) -> tuple[LexiconSource, ...]:
    return tuple(_source(v, where, f"{key}[{i}]", types) for i, v in enumerate(_list(value, where, key)))


def _rule(value: Any, where: str, key: str, types: tuple[str, ...]) -> tuple[str, str, str]:
    rule = _mapping(value, where, key, _RETYPE_KEYS, _RETYPE_KEYS)
    pattern = _text(rule["pattern"], where, f"{key}.pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PresetError(f"{where}: {key}.pattern: not a regular expression ({exc})") from None
    return pattern, _type(rule["from"], where, f"{key}.from", types), _type(rule["to"], where, f"{key}.to", types)


def parse_presets(data: Any, where: str, name: str) -> list[Preset]:
    """The presets ``name`` and, with ``noisy_sources``, ``name + "_all"`` of one loaded file
    (``where`` names the file in errors)."""
    top = _mapping(data, where, "top level", _FILE_KEYS, ("types", "sources"))
    types = tuple(_text(t, where, f"types[{i}]") for i, t in enumerate(_list(top["types"], where, "types")))
    if not types or len(set(types)) != len(types):
        raise PresetError(f"{where}: types: expected distinct types, at least one, got {list(types)!r}")
    sources = _sources(top["sources"], where, "sources", types)
    stopword_files = tuple(_text(p, where, f"stopword_files[{i}]")
                           for i, p in enumerate(_list(top.get("stopword_files", []), where, "stopword_files")))
    retype = tuple(_rule(r, where, f"retype[{i}]", types)
                   for i, r in enumerate(_list(top.get("retype", []), where, "retype")))
    out = [Preset(name, types, sources, stopword_files, retype)]
    if "noisy_sources" in top:
        noisy = _sources(top["noisy_sources"], where, "noisy_sources", types)
        out.append(Preset(f"{name}_all", types, sources + noisy, stopword_files, retype))
    return out


def load_preset_file(file: _File) -> list[Preset]:
    """The presets of one ``<corpus>.yaml`` file (see the module docstring for the keys)."""
    where = str(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{where}: cannot read the preset file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PresetError(f"{where}: invalid YAML: {exc}") from exc
    return parse_presets(data, where, file.name.removesuffix(".yaml"))


def load_presets(files: Iterable[_File]) -> dict[str, Preset]:
    """``name -> Preset`` of the ``*.yaml`` files among ``files``, in file-name order."""
    out: dict[str, Preset] = {}
    chosen = sorted((f for f in files if f.name.endswith(".yaml")), key=lambda f: f.name)
    if not chosen:
        raise PresetError("no lexicon preset files (*.yaml) found: the package data of cemr/lexicon/presets "
                          "is missing; reinstall cemr")
    for file in chosen:
        for preset in load_preset_file(file):
            if preset.name in out:
                raise PresetError(f"{file}: preset {preset.name!r} is defined twice; rename one file")
            out[preset.name] = preset
    return out


PRESETS: dict[str, Preset] = load_presets((resources.files("cemr.lexicon") / "presets").iterdir())


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown lexicon preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def lexicons_dir() -> str:
    """``<data_dir>/lexicons``, where the presets' public lists live."""
    return os.path.join(data_dir(), "lexicons")
