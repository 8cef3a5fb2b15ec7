"""Stage fingerprints: a stage's output in a run directory is reused only for the config and the
inputs that made it.

Once a stage of :mod:`cemr.pipeline` has written its output, it writes the marker
``<stage dir>/fingerprint.json`` (atomically, :func:`cemr.outputs.atomic_write_text`): what the
output depends on, in named parts (one per stage, or one per featurizer for ``pretrain``)::

    {"stage": "pretrain", "version": 1,
     "parts": {"word2vec": {"config": {...}, "upstream": {"prepare": "<digest>"}, ...}, ...}}

- ``version``: :data:`STAGE_VERSIONS`; bump a stage's number when its code changes what it writes,
  so outputs of the older code are not reused.
- ``config``: the config keys the part reads (dotted, as :func:`cemr.config.flatten` names them).
- ``inputs``: the identity of each input file or directory (:func:`path_identity`): resolved path,
  number of files, bytes, and a digest of every file's relative path, size and mtime. Only
  ``stat`` is called: changed, added or removed files are seen, no data is hashed.
- ``upstream``: the :func:`digest` of what the part was built from (the prepare marker, the
  word2vec part).

What each stage depends on:

- ``prepare`` (``data/``): every ``data.*`` key and the ``data.train`` / ``data.dev`` /
  ``data.test`` / ``data.unlabeled[].path`` inputs. Not ``cluster.rows_per_shard``: it cuts the
  same rows into other files.
- ``pretrain`` (``pretrain/``), one part per featurizer: ``word2vec`` (``model.word2vec.*``),
  one per enabled featurizer of :mod:`cemr.features.registry`: ``bilm`` (``model.bilm.*`` and the
  word2vec part it starts from), ``bert`` (``model.bert.*`` and the ``model.bert.checkpoint``
  input), each with ``train.seed`` (or ``train.pretrain_seed`` when set), the pretraining text cap
  (the larger of ``model.bilm.max_sentences`` and ``model.bert.pretrain_max_sentences``) and the
  prepare digest. ``enabled`` and ``model.bert.freeze`` are not part of it (they decide whether
  and how a featurizer is loaded, not what pretraining writes). A config needs the parts it
  enables, word2vec always: a run directory pretrained with every featurizer also serves a config
  that disables some (the ablation benchmark shares one).
- ``components`` (``components/``: label set and vocabulary): ``data.types``, the prepare digest
  and the word2vec part.

On a rerun into the same run directory (:func:`check_stage`):

- no marker and no output: the stage runs, then writes its marker;
- the marker has every part the config needs, equal: the output is reused;
- a part differs or is missing, or the stage version differs: :class:`StaleStageError`, naming the
  stage directory and every difference (``data.demo_seed: 7 -> 8``, an input whose files changed);
- output without a marker (written before fingerprints were recorded, or cut off before its
  marker was written): :class:`StaleStageError` as well.

A stale stage is never reused and never redone silently: redoing it in place would leave what the
later stages built on the old output (pretraining, components, trained rounds) beside the new one.
The error says to choose another ``run_dir`` or to remove the run directory to start it over.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cemr.config import Config, ConfigError, expand_path, flatten
from cemr.features.registry import FEATURIZERS, enabled_featurizers
from cemr.outputs import atomic_write_text

MARKER = "fingerprint.json"
# bump a stage's number when its code changes what it writes
STAGE_VERSIONS = {"prepare": 2, "pretrain": 2, "components": 1}
# prepare 2: dev/test cut as unseen text, documents/ written; pretrain 2: BiLM/BERT batches by cemr.batching
# config keys of a featurizer section that do not change what pretraining writes
NOT_PRETRAINING = ("enabled", "freeze", "autocast", "window_batch_size")
MAX_SHOWN = 20  # differences listed in an error (all are counted)


class StaleStageError(ConfigError):
    """A stage output in a run directory that was made from another config or other inputs."""


# ----------------------------------------------------------------------------------------------
# Pure parts
# ----------------------------------------------------------------------------------------------


def digest(obj: Any) -> str:
    """A 128-bit BLAKE2b hex digest of ``obj`` as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _walk(root: Path) -> Iterable[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of every file under ``root``, sorted, hidden files included."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            st = p.stat()
            rows.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(rows)


def path_identity(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """What identifies an input cheaply: ``{"path", "exists", "files", "bytes", "stat_digest"}``,
    the digest over every file's relative path, size and mtime (a file: its own). None for None."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    if not p.exists():
        return {"path": str(p), "exists": False}
    rows = list(_walk(p)) if p.is_dir() else [(p.name, p.stat().st_size, p.stat().st_mtime_ns)]
    return {"path": str(p), "exists": True, "files": len(rows), "bytes": sum(r[1] for r in rows),
            "stat_digest": digest(rows)}


def section_keys(cfg: Any, prefix: str, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The flattened keys of a config section, named ``<prefix>.<key>``, without ``drop`` keys."""
    dropped = {f"{prefix}.{k}" for k in drop}
    return {k: v for k, v in flatten(cfg, prefix + ".").items() if k not in dropped}


@dataclass(frozen=True)
class StageFingerprint:
    """What a stage's output depends on: ``parts`` maps a part name to a JSON-able dict."""

    stage: str
    parts: Mapping[str, Mapping[str, Any]]

    @property
    def version(self) -> int:
        return STAGE_VERSIONS[self.stage]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "version": self.version, "parts": {k: dict(v) for k, v in self.parts.items()}}

    def digest(self, part: str | None = None) -> str:
        """The digest of one part, or of the whole stage."""
        return digest(self.to_dict() if part is None else {"version": self.version, **self.parts[part]})


def _canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists ...), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str))


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}`` (an empty dict has no leaves)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
        return out
    return {prefix: obj}


def _value(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(recorded: Mapping[str, Any], wanted: StageFingerprint) -> list[str]:
    """Why a recorded marker does not serve ``wanted``: one line per difference (empty: it does).

    Parts ``wanted`` does not need are ignored; config keys are named as dotted keys, inputs by
    their role (``data.train``) with what changed."""
    if recorded.get("stage") != wanted.stage:
        return [f"the marker is for stage {recorded.get('stage')!r}, not {wanted.stage!r}"]
    if recorded.get("version") != wanted.version:
        return [f"stage format version {recorded.get('version')} -> {wanted.version} (written by another cemr)"]
    have = recorded.get("parts") or {}
    out: list[str] = []
    for name, part in wanted.to_dict()["parts"].items():
        if name not in have:
            out.append(f"{name}: not in this stage's output (it was made without it)")
            continue
        old, new = _flat(_canonical(have[name])), _flat(_canonical(part))
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<absent>") == new.get(key, "<absent>"):
                continue
            what = key.split(".", 1)
            if what[0] == "config" and len(what) == 2:
                out.append(f"{what[1]}: {_value(old.get(key, '<absent>'))} -> {_value(new.get(key, '<absent>'))}")
            elif what[0] == "inputs" and len(what) == 2:
                role, _, field = what[1].rpartition(".")
                out.append(f"input {role or what[1]}: {field} {_value(old.get(key, '<absent>'))} -> "
                           f"{_value(new.get(key, '<absent>'))}")
            elif what[0] == "upstream":
                out.append(f"{name}: built from another {key.split('.', 1)[-1]} output")
            else:
                out.append(f"{name}.{key}: {_value(old.get(key, '<absent>'))} -> {_value(new.get(key, '<absent>'))}")
    return sorted(set(out), key=out.index)


# ----------------------------------------------------------------------------------------------
# The stages' fingerprints
# ----------------------------------------------------------------------------------------------


def prepare_inputs(cfg: Config) -> dict[str, Any]:
    """The input files of ``prepare`` by role: ``data.train``, ``data.dev``, ``data.test``,
    ``data.unlabeled[i]`` (none for the built-in demo corpus)."""
    d = cfg.data
    out: dict[str, Any] = {}
    for role in ("train", "dev", "test"):
        value = getattr(d, role)
        if value:
            out[f"data.{role}"] = path_identity(expand_path(value))
    for i, src in enumerate(d.unlabeled):
        out[f"data.unlabeled[{i}]"] = path_identity(expand_path(src.path)) if src.path else None
    return out


def prepare_fingerprint(cfg: Config) -> StageFingerprint:
    return StageFingerprint("prepare", {"prepare": {"config": section_keys(cfg.data, "data"),
                                                    "inputs": prepare_inputs(cfg)}})


def pretraining_text_cap(cfg: Config) -> int | None:
    """How many texts (train first, then the unlabeled pool) pretraining reads; None: all. The
    largest ``text_cap`` of the registered featurizers, enabled or not (so that turning one off
    does not change what word2vec and the others read)."""
    caps = [kind.text_cap(cfg.model) or 0 for kind in FEATURIZERS.values()]
    return max(caps, default=0) or None


def pretrain_seed(cfg: Config) -> int:
    """The seed pretraining runs with: ``train.pretrain_seed``, else ``train.seed``."""
    return int(cfg.train.seed if cfg.train.pretrain_seed is None else cfg.train.pretrain_seed)


def pretrain_fingerprint(cfg: Config, prepare_digest: str) -> StageFingerprint:
    """The featurizers ``cfg`` needs (word2vec always, each enabled one of
    :data:`cemr.features.registry.FEATURIZERS`), built on the prepared data of ``prepare_digest``."""
    m = cfg.model
    seed_key = "train.seed" if cfg.train.pretrain_seed is None else "train.pretrain_seed"
    common = {seed_key: pretrain_seed(cfg), "pretrain.text_cap": pretraining_text_cap(cfg)}
    upstream = {"prepare": prepare_digest}
    w2v = {"config": {**section_keys(m.word2vec, "model.word2vec"), **common}, "upstream": upstream}
    parts: dict[str, dict[str, Any]] = {"word2vec": w2v}
    w2v_digest = digest({"version": STAGE_VERSIONS["pretrain"], **w2v})
    for kind in enabled_featurizers(m):
        part: dict[str, Any] = {"config": {**section_keys(kind.section(m), f"model.{kind.name}", NOT_PRETRAINING),
                                           **common}}
        inputs = kind.inputs(m)
        if inputs:
            part["inputs"] = {key: path_identity(path) for key, path in inputs.items()}
        part["upstream"] = {**upstream, "word2vec": w2v_digest} if kind.after_word2vec else upstream
        parts[kind.name] = part
    return StageFingerprint("pretrain", parts)


def components_fingerprint(cfg: Config, prepare_digest: str, word2vec_digest: str) -> StageFingerprint:
    return StageFingerprint("components", {"components": {
        "config": {"data.types": cfg.data.types},
        "upstream": {"prepare": prepare_digest, "word2vec": word2vec_digest}}})


# ----------------------------------------------------------------------------------------------
# Markers on disk
# ----------------------------------------------------------------------------------------------


def read_marker(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of ``stage_dir``; None when there is none; :class:`StaleStageError` when it
    cannot be read."""
    path = Path(stage_dir) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StaleStageError(f"{path}: unreadable stage marker ({exc}); remove the run directory "
                              "to start it over or choose another run_dir") from None
    if not isinstance(data, dict) or not isinstance(data.get("parts"), dict):
        raise StaleStageError(f"{path}: not a stage marker (no 'parts'); remove the run directory "
                              "to start it over or choose another run_dir")
    return data


def write_marker(stage_dir: str | os.PathLike, fp: StageFingerprint) -> Path:
    """Write ``fp`` as ``stage_dir``'s marker (atomically): the stage's output is complete."""
    path = Path(stage_dir) / MARKER
    atomic_write_text(path, json.dumps(fp.to_dict(), ensure_ascii=False, indent=1, sort_keys=True) + "\n")
    return path


def recorded_digest(stage_dir: str | os.PathLike, stage: str, part: str | None = None) -> str:
    """The digest of the recorded marker of a finished stage (or of one of its parts): what a later
    stage is built from. :class:`StaleStageError` when the stage has no marker."""
    data = read_marker(stage_dir)
    if data is None:
        raise StaleStageError(f"{Path(stage_dir) / MARKER}: missing; the {stage} stage has not finished "
                              f"in {Path(stage_dir).parent} (run it first)")
    if part is None:
        return digest({"stage": data.get("stage"), "version": data.get("version"), "parts": data["parts"]})
    if part not in data["parts"]:
        raise StaleStageError(f"{Path(stage_dir) / MARKER}: the {stage} stage has no {part!r} part")
    return digest({"version": data.get("version"), **data["parts"][part]})


def check_stage(stage_dir: str | os.PathLike, wanted: StageFingerprint, has_output: bool) -> bool:
    """True: ``stage_dir`` holds this stage's output for ``wanted`` (reuse it); False: no output
    yet (run the stage). :class:`StaleStageError` (see the module docstring) otherwise."""
    stage_dir = Path(stage_dir)
    recorded = read_marker(stage_dir)
    run_dir = stage_dir.parent
    if recorded is None:
        if not has_output:
            return False
        raise StaleStageError(
            f"{stage_dir}: {wanted.stage} output without {MARKER} (written before cemr recorded what a stage "
            f"depends on, or cut off before it finished): cannot tell whether it matches this config. "
            f"Choose another run_dir, or remove {run_dir} to start the run over")
    diff = differences(recorded, wanted)
    if not diff:
        return True
    shown = "; ".join(diff[:MAX_SHOWN]) + (f"; (+{len(diff) - MAX_SHOWN} more)" if len(diff) > MAX_SHOWN else "")
    raise StaleStageError(
        f"{stage_dir}: the {wanted.stage} output there was made from another config or other inputs "
        f"({shown}); it is not reused. Choose another run_dir, or remove {run_dir} to start the run over")
