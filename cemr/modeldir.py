"""A self-contained model directory: everything needed to tag text, and nothing pickled.

Layout::

    config.json           format, tagger hyper-parameters, model config, labels, featurizer
                          classes, versions of cemr / torch / transformers, caller's extra info
    weights.safetensors   the tagger's weights (frozen featurizers excluded: they live below)
    vocab.json            the char vocabulary (cemr.vocab)
    labels.json           the tag list, in id order (cemr.tags.LabelSet.to_list)
    lexicon.tsv           the lexicon of the dictionary feature (full view), when the model has one
    bert/, bilm/          featurizer directories, written by their own ``save`` and read by ``load``

The directory is written to a temporary sibling and renamed into place, so a reader never sees
half a model. Featurizer classes are imported only from ``cemr.features.*`` (or passed
explicitly), so a model directory cannot make the loader import arbitrary code.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import cemr
from cemr.config import ModelConfig
from cemr.lexicon import Lexicon
from cemr.outputs import atomic_dir
from cemr.features.frozen import apply_frozen
from cemr.features.registry import FEATURIZERS
from cemr.tagger import BiLMBNERTagger, Collator, is_frozen, make_collator, tagger_from_hparams
from cemr.tags import LabelSet
from cemr.vocab import CharVocab

FORMAT = "cemr-model/2"  # 2: tagger hparams "featurizer_dims" (1: "bert_dim" / "bilm_dim")
READABLE_FORMATS = ("cemr-model/1", FORMAT)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
VOCAB_FILE = "vocab.json"
LABELS_FILE = "labels.json"
LEXICON_FILE = "lexicon.tsv"
ALLOWED_FEATURIZER_MODULES = "cemr.features."


class ModelDirError(ValueError):
    """A model directory that cannot be read: names the file and the problem."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns; ``config`` is the parsed ``config.json``."""

    tagger: BiLMBNERTagger
    vocab: CharVocab
    labels: LabelSet
    lexicon: Lexicon | None
    config: dict[str, Any]

    def collator(self) -> Collator:
        """The :class:`~cemr.tagger.Collator` for this model (full lexicon for every sentence)."""
        return make_collator(self.tagger, self.vocab, self.labels, self.lexicon)


def versions() -> dict[str, str | None]:
    """Versions of cemr, torch and transformers (transformers' from its metadata: no import)."""
    try:
        transformers = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers = None
    return {"cemr": cemr.__version__, "torch": torch.__version__, "transformers": transformers}


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _full_lexicon(lexicon: Any) -> Lexicon | None:
    """A FoldedLexicon is saved as its ``full`` view (what unseen text is matched against)."""
    if lexicon is None:
        return None
    full = getattr(lexicon, "full", lexicon)
    if not isinstance(full, Lexicon):
        raise TypeError(f"expected a Lexicon or FoldedLexicon, got {type(lexicon).__name__}")
    return full


def save_model(
    directory: str | os.PathLike,
    tagger: BiLMBNERTagger,
    *,
    vocab: CharVocab,
    labels: LabelSet,
    lexicon: Any = None,
    model_config: ModelConfig | None = None,
    extra: Mapping[str, Any] | None = None,
    inference: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``tagger`` (unwrapped, any device) and everything it needs to ``directory``.

    ``lexicon``: a Lexicon or FoldedLexicon (its full view is saved), required when the tagger has
    the dictionary feature; ``model_config`` is recorded for reference; ``extra`` (JSON-able:
    dev F1, round, ...) is stored under ``"extra"``; ``inference`` records what tagging raw text
    needs (``max_len``: the sentence length the model was trained on), read back by
    :meth:`cemr.predictor.Predictor.load`. Refuses to replace an existing directory
    unless ``overwrite``. Returns the directory.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists (pass overwrite=True to replace it)")
    if tagger.hparams["vocab_size"] != len(vocab) or tagger.num_tags != labels.num_tags:
        raise ValueError(
            f"the tagger has {tagger.hparams['vocab_size']} chars / {tagger.num_tags} tags, the vocab "
            f"{len(vocab)} and the labels {labels.num_tags}"
        )
    full = _full_lexicon(lexicon)
    if tagger.dictionary is not None and full is None:
        raise ValueError("the tagger has a dictionary feature: save_model needs its lexicon")
    featurizers = {
        name: {"class": _class_path(m), "frozen": is_frozen(m), "dim": m.dim}
        for name, m in tagger.featurizers().items()
    }
    config = {
        "format": FORMAT,
        "tagger": tagger.hparams,
        "labels": labels.to_list(),
        "featurizers": featurizers,
        "dictionary": tagger.dictionary is not None,
        "model": dataclasses.asdict(model_config) if model_config is not None else None,
        "versions": versions(),
        "inference": dict(inference) if inference else {},
        "extra": dict(extra) if extra else {},
    }
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in tagger.checkpoint_state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        vocab.save(tmp / VOCAB_FILE)
        (tmp / LABELS_FILE).write_text(json.dumps(labels.to_list(), ensure_ascii=False), encoding="utf-8")
        if full is not None:
            full.save(tmp / LEXICON_FILE)
        for name, module in tagger.featurizers().items():
            module.save(tmp / name)
    return target


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a cemr model directory?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelDirError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc


def check_model_dir(directory: str | os.PathLike) -> Path:
    """``directory`` itself if it holds a model's ``config.json``; else a :class:`ModelDirError`
    that says which directory to pass (a run directory's ``model/`` or best round), or
    ``FileNotFoundError`` when there is nothing there."""
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"{d}: no such model directory")
    if not d.is_dir():
        raise ModelDirError(f"{d}: is a file; --model takes a model directory (holding {CONFIG_FILE})")
    if (d / CONFIG_FILE).is_file():
        return d
    hints = []
    if (d / "model" / CONFIG_FILE).is_file():
        hints.append(str(d / "model"))
    rounds = sorted((d / "rounds").glob("round_*/model")) if (d / "rounds").is_dir() else []
    hints.extend(str(r) for r in rounds if (r / CONFIG_FILE).is_file())
    if hints:
        more = f" (or a round's: {', '.join(hints[1:4])}{' ...' if len(hints) > 4 else ''})" if len(hints) > 1 else ""
        raise ModelDirError(f"{d}: is a run directory, not a model directory; pass --model {hints[0]}{more}")
    raise ModelDirError(f"{d}: not a cemr model directory ({CONFIG_FILE} missing)")


def _featurizer_class(name: str, spec: Mapping[str, Any], classes: Mapping[str, type], where: Path) -> type:
    if name in classes:
        return classes[name]
    path = str(spec.get("class", ""))
    module, _, qualname = path.partition(":")
    if not module.startswith(ALLOWED_FEATURIZER_MODULES) or not qualname:
        raise ModelDirError(
            f"{where}: featurizer {name!r} class {path!r} is not under {ALLOWED_FEATURIZER_MODULES}*; "
            f"pass featurizer_classes={{{name!r}: cls}} to load it"
        )
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _load_featurizer(cls: type, directory: Path, device: torch.device, frozen: bool):
    return apply_frozen(cls.load(directory, device), frozen)


def read_weights(directory: str | os.PathLike, *, vocab: CharVocab | None = None,
                 labels: LabelSet | None = None) -> dict[str, torch.Tensor]:
    """The tagger weights of a model directory (CPU tensors, safetensors: nothing unpickled), for
    starting a new tagger from them. ``vocab`` / ``labels``: those of the tagger the weights are
    for; a directory built on other ones is refused (same sizes in another order would load
    without error and mean something else)."""
    d = Path(directory)
    weights = d / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing")
    if vocab is not None and _load_vocab(d / VOCAB_FILE) != vocab:
        raise ModelDirError(f"{d / VOCAB_FILE}: the model was built on another char vocabulary")
    if labels is not None and _read_json(d / LABELS_FILE) != labels.to_list():
        raise ModelDirError(f"{d / LABELS_FILE}: the model was built on another label set")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        size = weights.stat().st_size
        raise ModelDirError(f"{weights}: unreadable weights ({size} bytes; truncated or not a safetensors "
                            f"file?): {exc}") from exc


def _load_vocab(path: Path) -> CharVocab:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a cemr model directory?)")
    try:
        return CharVocab.load(path)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path}: not a cemr char vocabulary: {exc}") from exc


def load_model(
    directory: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    featurizer_classes: Mapping[str, type] | None = None,
) -> LoadedModel:
    """Read a directory written by :func:`save_model`; the tagger is on ``device``, in eval mode."""
    d = check_model_dir(directory)
    device = torch.device(device)
    config = _read_json(d / CONFIG_FILE)
    if not isinstance(config, dict) or config.get("format") not in READABLE_FORMATS:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelDirError(f"{d / CONFIG_FILE}: format {found!r}, expected one of {', '.join(READABLE_FORMATS)}")
    missing = [k for k in ("tagger", "labels") if not isinstance(config.get(k), (dict, list))]
    if missing:
        raise ModelDirError(f"{d / CONFIG_FILE}: missing or malformed key(s) {', '.join(missing)}")
    try:
        labels = LabelSet.from_list(_read_json(d / LABELS_FILE))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, ModelDirError):
            raise
        raise ModelDirError(f"{d / LABELS_FILE}: not a tag list: {exc}") from exc
    if labels.to_list() != config["labels"]:
        raise ModelDirError(f"{d / LABELS_FILE}: labels differ from those in {CONFIG_FILE}")
    vocab = _load_vocab(d / VOCAB_FILE)
    try:
        lexicon = Lexicon.load(d / LEXICON_FILE) if (d / LEXICON_FILE).is_file() else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelDirError(f"{d / LEXICON_FILE}: unreadable lexicon: {exc}") from exc
    if config.get("dictionary") and lexicon is None:
        raise FileNotFoundError(f"{d / LEXICON_FILE}: missing (the model has a dictionary feature)")
    classes = dict(featurizer_classes or {})
    modules = {}
    for name, spec in (config.get("featurizers") or {}).items():
        if name not in FEATURIZERS:
            raise ModelDirError(f"{d / CONFIG_FILE}: unknown featurizer {name!r}")
        if not (d / name).is_dir():
            raise FileNotFoundError(f"{d / name}: missing featurizer directory")
        if not isinstance(spec, dict):
            raise ModelDirError(f"{d / CONFIG_FILE}: featurizer {name!r}: expected a mapping, got {spec!r}")
        cls = _featurizer_class(name, spec, classes, d / CONFIG_FILE)
        try:
            modules[name] = _load_featurizer(cls, d / name, device, bool(spec.get("frozen", True)))
        except (FileNotFoundError, ModelDirError):
            raise
        except Exception as exc:  # a featurizer's own loader: name the directory, keep the cause
            raise ModelDirError(f"{d / name}: cannot load the {name} featurizer: "
                                f"{type(exc).__name__}: {exc}") from exc
    try:
        tagger = tagger_from_hparams(config["tagger"], labels, **modules)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{d / CONFIG_FILE}: cannot rebuild the tagger: {exc}") from exc
    if config["tagger"]["vocab_size"] != len(vocab):
        raise ModelDirError(f"{d / VOCAB_FILE}: {len(vocab)} chars, the tagger was built for {config['tagger']['vocab_size']}")
    state = read_weights(d)  # CPU tensors, copied onto the params
    tagger.to(device)
    try:
        tagger.load_checkpoint_state(state)
    except (ValueError, RuntimeError) as exc:
        raise ModelDirError(f"{d / WEIGHTS_FILE}: {exc}") from exc
    tagger.eval()
    return LoadedModel(tagger, vocab, labels, lexicon, config)
