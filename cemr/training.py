"""Supervised training of the tagger: a plain-torch loop, usable alone or inside a Ray Train worker.

:func:`train_tagger` knows nothing of Ray. Distributed use: the caller wraps the model (DDP, e.g.
``ray.train.torch.prepare_model``), passes the *whole* training set and ``rank``/``world_size``;
every worker then builds the same seeded list of length-bucketed batches each epoch and takes
every ``world_size``-th batch (the list cut to a multiple of ``world_size``, so all workers take
the same number of steps and DDP's all-reduces line up). Every worker evaluates the whole dev set
with the same (synchronised) weights, so all take the same early-stopping decision.

Per epoch: batches of similar length (:func:`cemr.batching.length_batches`: indices shuffled with
the seed, pooled ``50 * batch_size`` at a time, sorted by length inside a pool, cut into batches,
batch order shuffled; a progress bar per epoch on a terminal, :mod:`cemr.progress`), Adam, the
model's dropout, gradient clipping, the learning rate ``lr * lr_decay ** (epoch - 1)``, optional AMP
(``train.amp``: the forward pass under ``torch.autocast`` of ``train.amp_dtype``; float16 with a
GradScaler on CUDA only, bfloat16 on CUDA or CPU); then dev
entity-level micro F1 (exact span and type, :func:`cemr.metrics.evaluate`; on document offsets
against every gold span when the dev documents are given, else on sentence offsets).
The weights of the best dev F1 are kept (on CPU); training stops after ``patience`` epochs without
improvement (``patience <= 0``: never), and the model ends holding the best weights. Seeded: the same seed, data and device
give the same result.

A fine-tuned BERT (a trainable featurizer with ``layer_parameters``, e.g.
:class:`cemr.features.bert.BertFeaturizer` with ``freeze=False``) gets its own optimizer groups
(:func:`param_groups`): the learning rate ``train.bert_lr`` at the top layer, times
``train.bert_layer_decay ** (L - depth)`` below it, a linear warmup over the first
``train.bert_warmup`` share of the call's steps, and the same per-epoch ``lr_decay``; the rest of
the tagger keeps ``train.lr`` without warmup.

Exact resume: ``on_checkpoint`` receives a :class:`TrainState` (weights, Adam's moments, the
GradScaler, the dropout RNG of this worker, the batch-order generator, the position in the epoch,
the step count that drives warmup, the epoch's running sums and the best-so-far bookkeeping)
every ``checkpoint_every`` optimizer steps inside an epoch and after every epoch; a later call
with ``resume=`` that state continues bit for bit where it stopped (same data, config, device
type and number of workers): its weights, history and result equal those of a run never stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from cemr.config import ConfigError, TrainConfig
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence, merge_predictions
from cemr.batching import batches_per_epoch, length_batches, shard_batches
from cemr.metrics import evaluate
from cemr.progress import progress
from cemr.stopping import Patience
from cemr.tags import LabelSet, bio_to_spans

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}  # train.amp_dtype


@dataclass
class TrainResult:
    """``best_state_dict``: CPU copy of the tagger's weights at the best epoch (its
    ``checkpoint_state_dict``: frozen featurizers excluded); ``history``: one dict per epoch."""

    best_state_dict: dict[str, Tensor]
    best_dev_f1: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class TrainState:
    """Where a :func:`train_tagger` run stands, after an optimizer step inside an epoch or after an
    epoch: what ``resume=`` needs to continue it exactly. Tensors are CPU copies.

    ``epoch``: epochs finished; ``batch``: batches of epoch ``epoch + 1`` done (0: at an epoch
    boundary); ``step``: optimizer steps so far (the warmup position); ``model``: the tagger's
    ``checkpoint_state_dict``; ``optimizer`` / ``scaler``: their ``state_dict``; ``rng``: this
    worker's global RNG states (``cpu``, and ``cuda`` when it trains on CUDA: dropout);
    ``batch_rng``: the batch-order generator as epoch ``epoch + 1`` starts; ``epoch_sums``: that
    epoch's running ``loss`` (summed over sentences), ``sentences``, ``chars``, ``seconds``;
    ``best_*``/``bad_epochs``/``history``: the early-stopping book and the epochs' metrics;
    ``world_size``/``train_sentences``: what the batch list was cut for (checked on resume).
    """

    epoch: int
    batch: int
    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Tensor]
    batch_rng: Tensor
    epoch_sums: dict[str, float]
    best_dev_f1: float
    best_epoch: int
    bad_epochs: int
    best_model: dict[str, Tensor]
    history: list[dict[str, Any]]
    world_size: int
    train_sentences: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (no copies), for :func:`torch.save`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = [n for n in names if n not in data], sorted(set(data) - set(names))
        if missing or unknown:
            raise ValueError(f"not a training state: missing {missing}, unknown {unknown}")
        return cls(**data)


def save_train_state(path: str | os.PathLike, state: TrainState) -> None:
    """Write ``state`` with :func:`torch.save` (tensors, numbers, strings, lists, dicts only)."""
    torch.save(state.to_dict(), str(path))


def load_train_state(path: str | os.PathLike) -> TrainState:
    """Read a :func:`save_train_state` file (``weights_only``: no code is unpickled); a file that
    is not one raises ``ValueError`` naming it."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        return TrainState.from_dict(data)
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{path}: not a readable training state ({exc}); delete it to train that "
                         f"round from its start") from exc


def cpu_copy(value: Any) -> Any:
    """``value`` with every tensor (inside dicts, lists, tuples) replaced by a detached CPU copy."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


def rng_states(device: torch.device) -> dict[str, Tensor]:
    """The global RNG states this process draws dropout from: ``cpu``, plus ``cuda`` (of
    ``device``) when ``device`` is CUDA."""
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(states: dict[str, Tensor], device: torch.device) -> None:
    """Restore :func:`rng_states`; a ``cuda`` state is restored only when ``device`` is CUDA (a
    run resumed on the CPU draws its dropout from the CPU stream, as it would have there)."""
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def check_resumable(state: TrainState, world_size: int, train_sentences: int, epochs: int) -> None:
    """Refuse a ``resume=`` state whose batch list this call cannot rebuild: another number of
    workers or of training sentences (the position inside the epoch would point elsewhere), or a
    position past ``epochs``."""
    if state.world_size != world_size or state.train_sentences != train_sentences:
        raise ValueError(
            f"cannot resume: the training state was saved with {state.world_size} worker(s) and "
            f"{state.train_sentences} training sentences, this run has {world_size} and {train_sentences}; "
            f"resume with the same data and cluster.num_workers, or start the round afresh")
    if state.epoch > epochs or (state.epoch == epochs and state.batch > 0):
        raise ValueError(f"cannot resume: the training state is at epoch {state.epoch} batch {state.batch}, "
                         f"past train.epochs={epochs}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``; ``cuda``/``cuda:N`` only when torch
    sees that device here. Anything else raises :class:`~cemr.config.ConfigError` naming the key
    (``train.device``, or the ``--device`` flag) and the devices this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    what = f"train.device (or --device) {name!r}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what}: unknown device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        available = ", ".join(["cpu", *(f"cuda:{i}" for i in range(count))])
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
            raise ConfigError(f"{what}: torch {torch.__version__} ({build}) sees no CUDA device on this "
                              f"machine; available: {available} (use auto or cpu)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what}: this machine has {count} CUDA device(s); available: {available}")
    return device


def unwrap(model: nn.Module) -> nn.Module:
    """The tagger inside a DDP (or similar ``.module``) wrapper."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


@torch.no_grad()
def predict_spans(
    model: nn.Module,
    sentences: Sequence[Sentence],
    collate: Callable[..., Any],
    labels: LabelSet,
    device: torch.device,
    batch_size: int = 64,
) -> list[list[Span]]:
    """Viterbi spans (sentence offsets) of every sentence, in input order; the model is put in
    eval mode and left there."""
    tagger = unwrap(model)
    tagger.eval()
    out: list[list[Span]] = [[] for _ in sentences]
    for idx in length_batches([len(s.text) for s in sentences], batch_size):
        batch = collate([sentences[i] for i in idx]).to(device)
        for i, tags in zip(idx, tagger.decode(batch)):
            out[i] = bio_to_spans(labels.from_ids(tags))
    return out


def evaluate_sentences(
    model: nn.Module,
    sentences: Sequence[Sentence],
    collate: Callable[..., Any],
    labels: LabelSet,
    device: torch.device,
    batch_size: int = 64,
    documents: Sequence[Document] | None = None,
):
    """Entity-level :class:`~cemr.metrics.EvalReport` of the model on gold sentences.

    ``documents``: the sentences' documents whole (``RUN_DIR/data/documents/``): the predictions
    are mapped to document offsets and scored against every gold span of the documents, those a
    sentence cut falls inside included (misses), as :func:`cemr.inference.evaluate_documents`
    scores a model directory. None: scored per sentence against the sentences' own spans."""
    pred = predict_spans(model, sentences, collate, labels, device, batch_size)
    if documents is not None:
        return evaluate(documents, merge_predictions(sentences, pred))
    gold = {str(i): s.spans for i, s in enumerate(sentences)}
    return evaluate(gold, {str(i): p for i, p in enumerate(pred)})


def _subset(train: Sequence[Sentence], weights: Sequence[float] | None, limit: int | None, seed: int):
    if limit is None or limit >= len(train):
        return list(train), (list(weights) if weights is not None else None)
    keep = sorted(torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
    return [train[i] for i in keep], ([weights[i] for i in keep] if weights is not None else None)


def _check_weights(weights: Sequence[float] | None, n: int) -> None:
    if weights is None:
        return
    if len(weights) != n:
        raise ValueError(f"{len(weights)} sample weights for {n} training sentences")
    bad = [i for i, w in enumerate(weights) if not (math.isfinite(float(w)) and float(w) >= 0)]
    if bad:
        raise ValueError(f"sample weight {weights[bad[0]]!r} of training sentence {bad[0]} is not a finite number >= 0")


def _snapshot(tagger: nn.Module) -> dict[str, Tensor]:
    state = tagger.checkpoint_state_dict() if hasattr(tagger, "checkpoint_state_dict") else tagger.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _restore(tagger: nn.Module, state: dict[str, Tensor]) -> None:
    if hasattr(tagger, "load_checkpoint_state"):
        tagger.load_checkpoint_state(state)
    else:
        tagger.load_state_dict(state)


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (from 1): ``cfg.lr * cfg.lr_decay ** (epoch - 1)``."""
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    return float(cfg.lr) * float(cfg.lr_decay) ** (epoch - 1)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: ``tagger`` (every trainable parameter outside a fine-tuned
    BERT: ``train.lr``, no warmup), then one group per depth of a fine-tuned BERT (embeddings
    first): ``train.bert_lr`` (null: ``train.lr``) times ``train.bert_layer_decay ** (L - depth)``
    (never above the top layer's), warmed up. Each group carries ``name``, ``base_lr`` and
    ``warmup``; the model may be DDP-wrapped (its parameters are the same objects)."""
    tagger = unwrap(model)
    bert = getattr(tagger, "bert", None)
    groups: list[dict[str, Any]] = []
    if bert is not None and hasattr(bert, "layer_parameters"):
        layers = int(bert.model.config.num_hidden_layers)
        top = float(cfg.bert_lr) if cfg.bert_lr is not None else float(cfg.lr)
        for depth, params in bert.layer_parameters():
            scale = float(cfg.bert_layer_decay) ** max(layers - depth, 0)
            groups.append({"params": params, "name": f"bert.depth{depth}", "base_lr": top * scale, "warmup": True})
    in_bert = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_bert]
    return [{"params": rest, "name": "tagger", "base_lr": float(cfg.lr), "warmup": False}, *groups]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (from 0),
    then 1; ``warmup_steps <= 0``: always 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def set_learning_rates(opt: torch.optim.Optimizer, epoch_factor: float, step: int, warmup_steps: int) -> None:
    """Every group's ``lr``: its ``base_lr`` times ``epoch_factor`` (``lr_decay ** (epoch - 1)``),
    times :func:`warmup_factor` for the warmed-up groups."""
    for group in opt.param_groups:
        warm = warmup_factor(step, warmup_steps) if group.get("warmup") else 1.0
        group["lr"] = group["base_lr"] * epoch_factor * warm


def amp_settings(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool, str | None]:
    """``(autocast dtype or None, use a GradScaler, warning or None)`` of ``train.amp`` /
    ``train.amp_dtype`` on ``device``: float16 needs CUDA (elsewhere: float32 and a warning),
    bfloat16 runs on CUDA and CPU without a scaler."""
    if not cfg.amp:
        return None, False, None
    dtype = AMP_DTYPES[cfg.amp_dtype]
    if dtype is torch.float16 and device.type != "cuda":
        return None, False, ("train: amp float16 requested but the device is not CUDA: training in float32 "
                             "(train.amp_dtype=bfloat16 runs on the CPU)")
    return dtype, dtype is torch.float16, None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type with ``dtype``; a no-op for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def train_tagger(
    model: nn.Module,
    train: Sequence[Sentence],
    dev: Sequence[Sentence],
    cfg: TrainConfig,
    device: torch.device | str,
    *,
    collate: Callable[..., Any],
    labels: LabelSet | None = None,
    on_epoch_end: Callable[[int, dict, nn.Module], None] | None = None,
    sample_weights: Sequence[float] | None = None,
    log: Callable[[str], None] = print,
    rank: int = 0,
    world_size: int = 1,
    start_epoch: int = 0,
    dev_documents: Sequence[Document] | None = None,
    resume: TrainState | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train ``model`` (a :class:`~cemr.tagger.BiLMBNERTagger`, possibly DDP-wrapped) on ``train``.

    ``collate(sentences, weights=None) -> Batch`` (a :class:`~cemr.tagger.Collator`);
    ``labels`` defaults to ``collate.labels``; ``sample_weights``: one weight >= 0 per training
    sentence (pseudo-labels may weigh less; default 1.0); ``on_epoch_end(epoch, metrics, model)``
    after each epoch's dev evaluation (``epoch`` from 1); ``log`` receives one line per epoch on
    rank 0. See the module docstring for batching, early stopping and distribution.
    ``start_epoch``: epochs already trained before this call, without their state (an
    epoch-level restart): the learning rate schedule (``cfg.lr_decay``) continues from there;
    epochs are still counted from 1 here.
    ``dev_documents``: the dev documents whole; the epoch is then selected on document-level dev F1
    (every gold span counted: :func:`evaluate_sentences`).
    ``on_checkpoint(state)``: a :class:`TrainState` after every ``checkpoint_every``-th optimizer
    step (counted over the whole run; not after an epoch's last batch; ``<= 0``: never) and after
    every epoch (after ``on_epoch_end``); an exception it raises stops the run there.
    ``resume``: such a state (of this data, ``cfg`` and ``world_size``; ``start_epoch`` 0): the
    weights, optimizer, RNGs and position are restored and training continues at its next batch,
    epochs numbered as in the interrupted run, up to ``cfg.epochs`` in all.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    labels = labels if labels is not None else getattr(collate, "labels", None)
    if labels is None:
        raise ValueError("train_tagger needs the label set: pass labels= or a collate with .labels")
    if not train:
        raise ValueError("train_tagger: the training set is empty")
    if resume is not None and start_epoch:
        raise ValueError(f"train_tagger: resume= carries its own epoch; start_epoch must be 0, got {start_epoch}")
    _check_weights(sample_weights, len(train))
    empty = [s for s in list(train) + list(dev) if not s.text]
    if empty:
        raise ValueError(f"document {empty[0].doc_id!r} sentence {empty[0].sent_id}: empty sentence")
    say = log if rank == 0 else (lambda _msg: None)
    train, sample_weights = _subset(train, sample_weights, cfg.max_train_sentences, cfg.seed)
    if len(train) < world_size:
        raise ValueError(f"{len(train)} training sentences cannot feed {world_size} workers")
    if resume is not None:
        check_resumable(resume, world_size, len(train), cfg.epochs)

    torch.manual_seed(cfg.seed + rank)  # dropout etc.: its own stream per worker
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order: the same on every worker
    tagger = unwrap(model)
    if tagger is model:
        model.to(device)
    amp_dtype, use_scaler, amp_warning = amp_settings(cfg, device)
    if amp_warning:
        say(amp_warning)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    groups = param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    fine_tuning_bert = len(groups) > 1
    lengths = [len(s.text) for s in train]
    warmup_steps = 0
    if fine_tuning_bert:
        total_steps = cfg.epochs * batches_per_epoch(len(train), cfg.batch_size, world_size)
        warmup_steps = math.ceil(float(cfg.bert_warmup) * total_steps)
        say(f"train: fine-tuning BERT: lr {groups[-1]['base_lr']:g} at the top layer, layer decay "
            f"{cfg.bert_layer_decay:g}, warmup {warmup_steps} of {total_steps} steps")
    if not dev:
        say("train: no dev sentences: no early stopping, the last epoch's weights are kept")

    step, first_epoch, skip, sums = 0, 1, 0, _zero_sums()
    book, best_state = Patience(cfg.patience), _snapshot(tagger)
    history: list[dict[str, Any]] = []
    stopped = False
    if resume is not None:
        _restore(tagger, resume.model)
        try:
            opt.load_state_dict(resume.optimizer)
        except ValueError as exc:
            raise ValueError(f"cannot resume: the saved optimizer does not fit this model ({exc}); the "
                             f"model or train.bert_* settings changed since the state was saved") from exc
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        gen.set_state(resume.batch_rng)
        set_rng_states(resume.rng, device)
        step, first_epoch, skip, sums = resume.step, resume.epoch + 1, resume.batch, dict(resume.epoch_sums)
        book = Patience.restored(cfg.patience, resume.epoch, resume.best_dev_f1, resume.best_epoch, bool(dev))
        best_state, history = resume.best_model, [dict(h) for h in resume.history]
        stopped = resume.batch == 0 and book.exhausted
        say(f"train: resuming after epoch {resume.epoch} batch {resume.batch} (step {step})")

    def capture(epoch_done: int, batch_done: int, batch_rng: Tensor, epoch_sums: dict[str, float]) -> TrainState:
        return TrainState(
            epoch=epoch_done, batch=batch_done, step=step, model=_snapshot(tagger),
            optimizer=cpu_copy(opt.state_dict()), scaler=cpu_copy(scaler.state_dict()),
            rng=cpu_copy(rng_states(device)), batch_rng=batch_rng.clone(), epoch_sums=dict(epoch_sums),
            best_dev_f1=book.best, best_epoch=book.best_step, bad_epochs=book.waited, best_model=best_state,
            history=[dict(h) for h in history], world_size=world_size, train_sentences=len(train))

    for epoch in range(first_epoch, cfg.epochs + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        lr = epoch_lr(cfg, start_epoch + epoch)
        epoch_factor = float(cfg.lr_decay) ** (start_epoch + epoch - 1)
        model.train()
        batch_rng = gen.get_state()
        batches = shard_batches(length_batches(lengths, cfg.batch_size, gen), rank, world_size)
        done = skip if epoch == first_epoch else 0
        if done == 0:
            sums = _zero_sums()
        prior_seconds = sums["seconds"]
        bar = progress(total=len(batches) - done, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch")
        for b in range(done, len(batches)):
            idx = batches[b]
            sents = [train[i] for i in idx]
            if sample_weights is None:
                batch = collate(sents)
            else:
                batch = collate(sents, weights=[sample_weights[i] for i in idx])
            batch = batch.to(device)
            opt.zero_grad(set_to_none=True)
            set_learning_rates(opt, epoch_factor, step, warmup_steps)
            with autocast(device, amp_dtype):
                loss = model(batch)
            loss_value = float(loss.detach())  # the step's one host sync of the loss
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"epoch {epoch}: the training loss became {loss_value}")
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.clip_norm and cfg.clip_norm > 0:
                nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            scaler.step(opt)
            scaler.update()
            step += 1
            sums["loss"] += loss_value * len(idx)
            sums["sentences"] += len(idx)
            sums["chars"] += sum(lengths[i] for i in idx)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / max(sums['sentences'], 1):.4f}", refresh=False)
            if on_checkpoint is not None and checkpoint_every > 0 and step % checkpoint_every == 0 \
                    and b + 1 < len(batches):
                sums["seconds"] = prior_seconds + time.perf_counter() - t0
                on_checkpoint(capture(epoch - 1, b + 1, batch_rng, sums))
        bar.close()
        train_s = prior_seconds + time.perf_counter() - t0
        seen_sents = int(sums["sentences"])
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sums["loss"] / max(seen_sents, 1),
            "lr": lr,
            "train_sentences": seen_sents,
            "train_seconds": train_s,
            "train_chars_per_s": sums["chars"] / train_s if train_s > 0 else 0.0,
        }
        if fine_tuning_bert:
            metrics["bert_lr"] = float(opt.param_groups[-1]["lr"])  # the top layer's, at the epoch's last step
        if dev:
            report = evaluate_sentences(model, dev, collate, labels, device, cfg.eval_batch_size,
                                        documents=dev_documents)
            metrics.update(
                dev_precision=report.micro.precision,
                dev_recall=report.micro.recall,
                dev_f1=report.micro.f1,
                dev_per_type_f1={t: prf.f1 for t, prf in report.per_type.items()},
            )
        improved = book.update(epoch, metrics.get("dev_f1") if dev else None)
        metrics["seconds"] = prior_seconds + time.perf_counter() - t0
        if improved:
            best_state = _snapshot(tagger)
        metrics["best_dev_f1"] = book.best
        history.append(metrics)
        say(
            f"epoch {epoch}/{cfg.epochs}: loss {metrics['train_loss']:.4f}"
            + (f"  dev P {metrics['dev_precision']:.4f} R {metrics['dev_recall']:.4f} F1 {metrics['dev_f1']:.4f}" if dev else "")
            + f"  ({metrics['seconds']:.1f}s, {metrics['train_chars_per_s']:.0f} chars/s)"
            + ("  *" if improved else "")
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)
        if on_checkpoint is not None:
            on_checkpoint(capture(epoch, 0, gen.get_state(), _zero_sums()))
        if book.exhausted:
            say(f"early stop: no dev F1 gain for {cfg.patience} epoch(s); best {book.best:.4f} at epoch {book.best_step}")
            stopped = True
    _restore(tagger, best_state)
    return TrainResult(best_state, max(book.best, 0.0), book.best_step, history, stopped)


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "sentences": 0, "chars": 0, "seconds": 0.0}
