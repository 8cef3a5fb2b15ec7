"""One self-training round's retraining with Ray Train (``TorchTrainer``, data-parallel DDP).

Driver side (:func:`train_round`): the training rows are a Ray Data dataset read from Parquet
shard directories (gold ``train/`` and the pseudo-labeled sets), each directory with its own
sample weight (a ``weight`` column is added per directory); ``TorchTrainer`` runs
:func:`train_loop_per_worker` on ``cluster.num_workers`` workers; afterwards the weights of the best
epoch (by dev F1) are loaded into a fresh tagger and written as the round's model directory
(``cemr.pipeline.save_round_model``).

Worker side (:func:`train_loop_per_worker`): builds the run's components
(``cemr.pipeline.build_components``: labels, vocabulary, lexicon, pretrained featurizers, read
from the run directory), a fresh tagger (``new_tagger``, seeded), wraps it with
``ray.train.torch.prepare_model`` (DDP), reads the training rows from
``ray.train.get_dataset_shard("train")`` and runs the plain-torch loop ``cemr.training.train_tagger``
with ``rank``/``world_size``. After every epoch all ranks call ``ray.train.report(metrics,
checkpoint)``; rank 0 attaches a checkpoint (the tagger's ``checkpoint_state_dict`` in safetensors
plus the epoch bookkeeping as JSON).

Resources: :func:`scaling_config` asks for exactly what ``cluster`` says (``num_workers``,
``cpus_per_worker``, one GPU per worker with ``use_gpu``); :func:`train_round` first waits for those
GPUs (:func:`cluster.runtime.worker_resources`: up to ``cluster.gpu_wait_s``, then
``GPUUnavailable``, or a CPU round with ``cluster.cpu_fallback``, recorded as
``RoundTrainResult.cpu_fallback``). A worker trains on ``ray.train.torch.get_device()``, the
device Ray assigned it, and stops when it was assigned a GPU that torch cannot see.

Where the data lives: **the run directory must be on storage every node sees** (a shared file
system or the same path on a single machine): workers read ``data/``, ``pretrain/`` and
``components/`` from it, and Ray Train persists checkpoints under ``<run_dir>/ray_train/<name>``
(``RunConfig(storage_path=<absolute run_dir>/ray_train)``).

Sharding: the dataset is *not* split by Ray (``DataConfig(datasets_to_split=[])``): every worker
reads the whole set, sorts it by ``(doc_id, sent_id)`` and takes every ``world_size``-th batch
of the same seeded batch list (``cemr.batching.shard_batches``). Ray's equal split
(``streaming_split(equal=True)``) would also give equal step counts (equal row counts give equal
batch counts with the length-bucketed batching), but it drops up to ``world_size - 1`` rows and
hands each worker different rows from one run to the next, so a seeded round would not be
reproducible and ``train.max_train_sentences`` would apply per worker.

Restarts: a worker (re)started with a checkpoint (``ray.train.get_checkpoint()``, after a worker
failure within ``cluster.max_failures``, or a later ``fit`` of the same round name after the job
was killed) continues exactly where that checkpoint left off: the weights, Adam's moments, the
GradScaler, every worker's dropout RNG, the batch-order generator, the position in the epoch, the
step count (BERT warmup) and the epoch's running sums (``cemr.training.TrainState``, every rank's
RNG gathered to rank 0, which writes the checkpoint; every rank reads its own back), so a round
interrupted and resumed ends with the weights of a round never interrupted. Checkpoints come after
every epoch and, with ``cluster.checkpoint_every_steps`` > 0 (or :func:`train_round`'s
``checkpoint_every``; default 0: epoch ends only), every that many optimizer steps inside an epoch: a
worker killed mid-epoch then loses at most that many steps. A mid-epoch checkpoint is reported
with ``dev_f1`` -1 and ``mid_epoch`` 1: it is never the best one (Ray keeps the two best by dev F1
plus the latest) and :func:`pick_best` skips it. The epoch counter, the best dev F1 and the
early-stopping counter continue from the checkpoint (:class:`EpochBook`). Early stopping is
therefore decided here, not inside ``train_tagger`` (which runs with ``patience=0``). A checkpoint
that says training had finished makes the worker return at once; one without the training state
(written before it was saved) is refused with what to do.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa

from cemr.config import Config
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import REQUIRED_COLUMNS, UNSURE, UNSURE_FIELD, shard_files, table_to_sentences
from cemr.pipeline import RunLayout
from cemr.progress import say
from cemr.stopping import Patience

Log = Callable[[str], None]

WEIGHTS_FILE = "weights.safetensors"
BOOK_FILE = "epochs.json"
STATE_FILE = "train_state.pt"  # cemr.training.TrainState less the weights, with every rank's RNG
CHECKPOINT_EVERY = 0  # optimizer steps between mid-epoch checkpoints (0: after every epoch only)
WEIGHT_COLUMN = "weight"
TRAIN_DATASET = "train"
SCORE = "dev_f1"


class TrainRoundError(RuntimeError):
    """A round that cannot be trained (bad inputs) or whose result cannot be used."""


# ----------------------------------------------------------------------------------------------
# Pure helpers (no Ray): epoch bookkeeping, checkpoints, rows
# ----------------------------------------------------------------------------------------------


@dataclass
class EpochBook:
    """Epoch bookkeeping that survives a worker restart (saved with every checkpoint).

    The rule is :class:`cemr.stopping.Patience`, as in :func:`cemr.training.train_tagger`: an
    epoch improves when its dev F1 is strictly higher than the best so far (every epoch improves
    without dev); training is finished after ``total_epochs`` or after ``patience`` epochs without
    improvement (``patience <= 0``: never early; no dev: never early).
    """

    total_epochs: int
    patience: int
    has_dev: bool
    epoch: int = 0
    best_dev_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    stop_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def _rule(self) -> Patience:
        return Patience.restored(self.patience, self.epoch, self.best_dev_f1, self.best_epoch, self.has_dev)

    def update(self, metrics: dict[str, Any]) -> bool:
        """Record one finished epoch (``metrics["epoch"]`` must be the next epoch); returns
        whether it improved."""
        epoch = int(metrics["epoch"])
        if epoch != self.epoch + 1:
            raise ValueError(f"epoch {epoch} reported after epoch {self.epoch}")
        rule = self._rule()
        improved = rule.update(epoch, float(metrics.get("dev_f1", 0.0)) if self.has_dev else None)
        self.epoch, self.best_dev_f1, self.best_epoch, self.bad_epochs = epoch, rule.best, rule.best_step, rule.waited
        self.history.append(dict(metrics))
        self._decide(rule)
        return improved

    def _decide(self, rule: Patience) -> None:
        self.finished, self.stop_reason = False, None
        if self.epoch >= self.total_epochs:
            self.finished, self.stop_reason = True, f"reached {self.total_epochs} epoch(s)"
        elif rule.exhausted:
            self.finished = True
            self.stop_reason = (f"early stop: no dev F1 gain for {self.patience} epoch(s); best "
                                f"{self.best_dev_f1:.4f} at epoch {self.best_epoch}")

    def refresh(self, total_epochs: int, patience: int) -> None:
        """Apply the current ``train.epochs`` / ``train.patience`` to a restored book (a resumed
        job may have changed them): ``finished`` is decided again from the epochs done."""
        self.total_epochs, self.patience = int(total_epochs), int(patience)
        self._decide(self._rule())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EpochBook":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown epoch bookkeeping field(s): {', '.join(unknown)}")
        return cls(**data)


def worker_log(prefix: str, rank: int) -> Log:
    """A training worker's log: rank 0's lines on stderr with ``prefix`` (Ray forwards a worker's
    stderr to the driver's stderr, so the job's stdout keeps its one JSON line), others silent."""
    return (lambda msg: say(prefix + msg)) if rank == 0 else (lambda _msg: None)


def json_safe(value: Any) -> Any:
    """Metrics as plain JSON values (NaN/inf become None; nested dicts and lists kept)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value


def report_metrics(metrics: dict[str, Any], book: EpochBook) -> dict[str, float]:
    """The flat numbers a worker reports to Ray Train for one epoch (``dev_f1`` always present:
    it is the checkpoint score; 0.0 without dev)."""
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.setdefault(SCORE, 0.0)
    out["best_dev_f1"] = max(book.best_dev_f1, 0.0)
    out["best_epoch"] = float(book.best_epoch)
    out["finished"] = float(book.finished)
    return out


def write_checkpoint(directory: str | os.PathLike, state_dict: dict[str, Any], book: EpochBook,
                     train_state: Any = None, rng_by_rank: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write a checkpoint: ``weights.safetensors`` (CPU tensors), ``epochs.json`` and, with
    ``train_state`` (a ``cemr.training.TrainState``), ``train_state.pt``: the state without its
    weights (those are ``state_dict``) and with ``rng_by_rank`` (one RNG state per worker; default:
    the state's own, one worker)."""
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / BOOK_FILE).write_text(json.dumps(json_safe(book.to_dict()), ensure_ascii=False), encoding="utf-8")
    if train_state is not None:
        payload = {**train_state.to_dict(), "model": {}, "rng": list(rng_by_rank or [train_state.rng])}
        torch.save(payload, str(directory / STATE_FILE))
    return directory


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], EpochBook]:
    """``(state_dict, book)`` of a checkpoint written by :func:`write_checkpoint`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS_FILE, BOOK_FILE):
        if not (directory / name).is_file():
            raise TrainRoundError(f"{directory / name}: missing from the checkpoint")
    try:
        book = EpochBook.from_dict(json.loads((directory / BOOK_FILE).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise TrainRoundError(f"{directory / BOOK_FILE}: bad epoch bookkeeping: {exc}") from exc
    return load_file(str(directory / WEIGHTS_FILE)), book


_START_AFRESH = "delete that round's directory under <run_dir>/ray_train to train the round from its start"


def missing_state_error(path: str | os.PathLike) -> TrainRoundError:
    """The error of a checkpoint without ``train_state.pt`` (an epoch-level checkpoint of an older
    cemr) that training should continue from."""
    return TrainRoundError(f"{path}: missing from the checkpoint (written by an older cemr, without the optimizer "
                           f"and RNG state an exact resume needs); {_START_AFRESH}")


def read_train_state(directory: str | os.PathLike, state_dict: dict[str, Any], book: EpochBook,
                     rank: int, world_size: int) -> Any:
    """The ``cemr.training.TrainState`` of worker ``rank`` from a checkpoint: its weights are
    ``state_dict`` (:func:`read_checkpoint`), its RNG that rank's. A checkpoint without one, or
    one of another number of workers or another epoch than its ``book``, raises
    :class:`TrainRoundError` naming the file and what to do."""
    import torch

    from cemr.training import TrainState

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise missing_state_error(path)
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
        rngs = payload.pop("rng")
        if len(rngs) != world_size:
            raise ValueError(f"saved by {len(rngs)} worker(s), this round has {world_size} (cluster.num_workers)")
        state = TrainState.from_dict({**payload, "model": state_dict, "rng": rngs[rank]})
    except Exception as exc:  # whatever torch.load or the checks raise: the file is unusable
        raise TrainRoundError(f"{path}: cannot resume from this training state: {exc}; {_START_AFRESH}") from exc
    if state.epoch != book.epoch:
        raise TrainRoundError(f"{path}: training state after epoch {state.epoch} but {BOOK_FILE} after epoch "
                              f"{book.epoch}: not one checkpoint; {_START_AFRESH}")
    return state


def gather_rng(rng: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    """Every worker's RNG states, in rank order, on every worker (``all_gather_object``; a
    collective: all ranks call it at the same step); one worker: ``[rng]``."""
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * world_size
        dist.all_gather_object(out, rng)
        return out
    return [rng]


def step_metrics(state: Any) -> dict[str, float]:
    """What a worker reports with a mid-epoch checkpoint: where it is, and ``dev_f1`` -1 so that
    Ray's best-by-dev-F1 retention never prefers it (the latest checkpoint is kept anyway)."""
    return {SCORE: -1.0, "mid_epoch": 1.0, "epoch_in_progress": float(state.epoch + 1),
            "batch": float(state.batch), "step": float(state.step)}


def check_weights(train_paths: Sequence[str | os.PathLike], weights: Sequence[float] | None) -> list[float]:
    """One finite weight >= 0 per training directory (default 1.0 each)."""
    if not train_paths:
        raise TrainRoundError("no training directory given")
    if weights is None:
        return [1.0] * len(train_paths)
    if len(weights) != len(train_paths):
        raise TrainRoundError(f"{len(weights)} weights for {len(train_paths)} training directories")
    out = []
    for path, w in zip(train_paths, weights):
        w = float(w)
        if not math.isfinite(w) or w < 0:
            raise TrainRoundError(f"{path}: sample weight {w!r} is not a finite number >= 0")
        out.append(w)
    return out


def has_unsure_column(path: str | os.PathLike) -> bool:
    """Whether the shards of ``path`` carry ``unsure`` ranges (partial pseudo-labels); from the
    first file's schema (a shard set has one schema)."""
    import pyarrow.parquet as pq

    files = shard_files(path)
    return bool(files) and UNSURE in pq.read_schema(files[0]).names


def add_unsure_column(batch: pa.Table) -> pa.Table:
    """``batch`` with an empty ``unsure`` column (gold rows: every tag observed), so that gold and
    partial pseudo-labeled datasets share one schema."""
    empty = pa.array([[] for _ in range(batch.num_rows)], type=UNSURE_FIELD.type)
    return batch.append_column(UNSURE_FIELD, empty)


def training_columns(batch: pa.Table, weight: float, add_unsure: bool) -> pa.Table:
    """The training rows of one directory: its sentence columns, ``unsure`` (empty when the
    directory has none) and the directory's ``weight``."""
    if add_unsure:
        batch = add_unsure_column(batch)
    return add_weight_column(batch, weight)


def add_weight_column(batch: pa.Table, weight: float) -> pa.Table:
    """``batch`` with a float32 ``weight`` column (the same value on every row)."""
    return batch.append_column(WEIGHT_COLUMN, pa.array([weight] * batch.num_rows, type=pa.float32()))


def rows_from_tables(tables: Iterable[pa.Table]) -> tuple[list[Sentence], list[float]]:
    """Sentences and their weights from tables of the sentence schema plus ``weight``, sorted by
    ``(doc_id, sent_id, offset, text)`` so every worker holds the same list in the same order."""
    rows: list[tuple[Sentence, float]] = []
    for table in tables:
        if WEIGHT_COLUMN not in table.column_names:
            raise TrainRoundError(f"training rows have no {WEIGHT_COLUMN!r} column: {table.column_names}")
        rows.extend(zip(table_to_sentences(table), (float(w) for w in table.column(WEIGHT_COLUMN).to_pylist())))
    rows.sort(key=lambda r: (r[0].doc_id, r[0].sent_id, r[0].offset, r[0].text))
    return [s for s, _ in rows], [w for _, w in rows]


def pick_best(candidates: Sequence[tuple[Any, dict[str, Any]]], best_epoch: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """The checkpoint to keep from ``(checkpoint, metrics)`` pairs: the one of ``best_epoch``
    (the workers' own rule) when it is among them, else the highest ``dev_f1`` (latest epoch on
    ties); mid-epoch checkpoints (:func:`step_metrics`) never."""
    candidates = [c for c in candidates if not c[1].get("mid_epoch")]
    if not candidates:
        raise TrainRoundError("the training run reported no checkpoint")
    if best_epoch is not None:
        for ckpt, metrics in candidates:
            if int(metrics.get("epoch", -1)) == int(best_epoch):
                return ckpt, metrics
    return max(candidates, key=lambda c: (float(c[1].get(SCORE, 0.0)), int(c[1].get("epoch", 0))))


def round_name(round: int) -> str:
    return f"round_{round:03d}"


# ----------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------


class _EarlyStop(Exception):
    """Raised after the last report of an early-stopped run to leave ``train_tagger``."""


def _resume_state(tagger: Any, rank: int, world_size: int, log: Log) -> tuple[EpochBook, Any, Path] | None:
    """``(book, train state or None, where)`` of this round's latest checkpoint (weights loaded
    into ``tagger``; the state is None in a checkpoint written without one), or None when there is
    no checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        state_dict, book = read_checkpoint(d)
        has_state = (Path(d) / STATE_FILE).is_file()
        state = read_train_state(d, state_dict, book, rank, world_size) if has_state else None
    tagger.load_checkpoint_state(state_dict)
    where = f"epoch {book.epoch}" + (f", batch {state.batch} of epoch {book.epoch + 1}" if state and state.batch else "")
    log(f"resuming from the checkpoint after {where}{f', step {state.step}' if state else ''} (best dev F1 "
        f"{max(book.best_dev_f1, 0):.4f} at epoch {book.best_epoch}{', finished' if book.finished else ''})")
    return book, state, Path(ckpt.path) / STATE_FILE


def _read_shard(dataset_name: str) -> tuple[list[Sentence], list[float]]:
    import ray.train

    shard = ray.train.get_dataset_shard(dataset_name)
    if shard is None:
        raise TrainRoundError(f"no {dataset_name!r} dataset was given to the trainer")
    return rows_from_tables(shard.iter_batches(batch_format="pyarrow", batch_size=4096))


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The Ray Train worker function (see the module docstring). ``config``: ``cfg`` (a
    :class:`cemr.config.Config`), ``run_dir`` (absolute, shared), ``round``, ``init_model`` (a
    model directory to start from, or None for the seeded fresh init)."""
    import torch
    import ray
    import ray.train
    import ray.train.torch

    from cemr.pipeline import build_components, load_documents, load_sentences, new_tagger
    from cemr.training import train_tagger
    from cluster.runtime import check_worker_device

    cfg: Config = config["cfg"]
    layout = RunLayout(Path(config["run_dir"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    prefix = f"[{round_name(int(config['round']))}] "
    log = worker_log(prefix, rank)
    device = ray.train.torch.get_device()  # the GPU Ray assigned this worker, or the CPU
    check_worker_device(ray.get_gpu_ids(), torch.device(device).type)

    comps = build_components(cfg, layout, device, log=log)
    torch.manual_seed(cfg.train.seed)
    init_model = config.get("init_model")
    tagger, collate = new_tagger(cfg, comps, init_from=init_model)
    dev = load_sentences(layout, "dev")
    resumed = _resume_state(tagger, rank, world, log)  # a checkpoint of this round replaces the initial weights
    if resumed is None and init_model:
        log(f"starting from the weights of {init_model}")
    book, train_state, state_path = resumed or (EpochBook(cfg.train.epochs, cfg.train.patience, bool(dev)), None, None)
    book.refresh(cfg.train.epochs, cfg.train.patience)
    if resumed is not None and train_state is None and not book.finished:
        raise missing_state_error(state_path)
    train, weights = _read_shard(TRAIN_DATASET)
    summary = {"train_rows": len(train), "start_epoch": book.epoch, "world_size": world,
               "init_model": str(init_model) if init_model else None}
    if book.finished:
        log(f"training had already finished at epoch {book.epoch}: nothing to do")
        return {**summary, "book": json_safe(book.to_dict())}

    model = ray.train.torch.prepare_model(tagger)
    log(f"training on {len(train)} sentences, {world} worker(s), epochs {book.epoch + 1}..{book.total_epochs}")

    def on_checkpoint(state: Any) -> None:
        mid_epoch = state.batch > 0
        if mid_epoch:
            metrics = step_metrics(state)
        else:
            book.update(json_safe(state.history[-1]))
            metrics = report_metrics(state.history[-1], book)
        rngs = gather_rng(state.rng, world)  # all ranks: a collective
        with tempfile.TemporaryDirectory(prefix="cemr_ckpt_") as tmp:
            checkpoint = None
            if rank == 0:
                write_checkpoint(tmp, state.model, book, state, rngs)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if not mid_epoch and book.finished:
            log(book.stop_reason or "finished")
            if book.epoch < book.total_epochs:
                raise _EarlyStop()

    train_cfg = dataclasses.replace(cfg.train, epochs=book.total_epochs, patience=0)
    try:
        train_tagger(model, train, dev, train_cfg, device, collate=collate, labels=comps.labels,
                     sample_weights=None if all(w == 1.0 for w in weights) else weights,
                     log=log, rank=rank, world_size=world, dev_documents=load_documents(layout, "dev"),
                     resume=train_state, checkpoint_every=int(config.get("checkpoint_every", CHECKPOINT_EVERY)),
                     on_checkpoint=on_checkpoint)
    except _EarlyStop:
        pass
    return {**summary, "book": json_safe(book.to_dict())}


# ----------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------


@dataclass
class RoundTrainResult:
    """What :func:`train_round` produced: the round's model directory, the best epoch's dev F1,
    the per-epoch history (all epochs of the round, also those before a restart), the rows
    trained on, and where Ray Train kept its run (``ray_train_path``)."""

    model_dir: Path
    best_dev_f1: float
    best_epoch: int
    history: list[dict[str, Any]]
    train_rows: int
    seconds: float
    ray_train_path: str
    resumed_from_epoch: int = 0
    stop_reason: str | None = None
    init_model: str | None = None
    cpu_fallback: bool = False  # cluster.use_gpu asked for GPUs that did not come: trained on the CPU

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_dir"] = str(self.model_dir)
        return out


def training_dataset(train_paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None):
    """A materialized Ray dataset of the sentence columns of every directory plus its ``weight``.

    Materialized here, before the trainer reserves the workers' CPUs: Ray Data's read tasks (and
    the file-listing task of its Parquet datasource, which always asks for a whole CPU) could not
    be scheduled on a small cluster whose CPUs the training workers hold. The workers then only
    fetch blocks. The training rows (gold + kept pseudo-labels) are small next to the pool.
    """
    import functools

    import ray.data

    ws = check_weights(train_paths, weights)
    parts = []
    for path, w in zip(train_paths, ws):
        if not Path(path).exists():
            raise TrainRoundError(f"{path}: training shards not found")
        unsure = has_unsure_column(path)
        ds = ray.data.read_parquet(str(path)).select_columns(list(REQUIRED_COLUMNS) + ([UNSURE] if unsure else []))
        ds.context.enable_progress_bars = False  # this dataset's own copy of the DataContext
        parts.append(ds.map_batches(functools.partial(training_columns, weight=w, add_unsure=not unsure),
                                    batch_format="pyarrow", batch_size=None))
    out = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return out.materialize()


def run_config(cfg: Config, layout: RunLayout, name: str):
    """Ray Train ``RunConfig`` of a round: absolute storage under the run dir, failure handling,
    the two best checkpoints by dev F1 (plus the latest, which Ray always keeps)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=name,
        storage_path=str((layout.root / "ray_train").resolve()),
        failure_config=FailureConfig(max_failures=int(cfg.cluster.max_failures)),
        checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=SCORE,
                                           checkpoint_score_order="max"),
    )


def scaling_config(cfg: Config, workers: dict[str, Any] | None = None):
    """``ScalingConfig`` of ``workers`` (:func:`cluster.runtime.worker_resources`, after its wait
    for the GPUs); default: ``cluster`` as configured (``num_workers``, ``use_gpu``: one GPU per
    worker, ``cpus_per_worker``), whatever the cluster has now."""
    from ray.train import ScalingConfig

    if workers is None:
        workers = {"num_workers": int(cfg.cluster.num_workers), "use_gpu": bool(cfg.cluster.use_gpu),
                   "cpus_per_worker": float(cfg.cluster.cpus_per_worker)}
    return ScalingConfig(num_workers=int(workers["num_workers"]), use_gpu=bool(workers["use_gpu"]),
                         resources_per_worker={"CPU": float(workers["cpus_per_worker"])})


def train_round(
    cfg: Config,
    layout: RunLayout,
    train_paths: Sequence[str | os.PathLike],
    round: int,
    *,
    weights: Sequence[float] | None = None,
    components: Any = None,
    init_model: str | os.PathLike | None = None,
    log: Log = say,
    checkpoint_every: int | None = None,
) -> RoundTrainResult:
    """Train round ``round`` on ``train_paths`` (Parquet shard directories: gold train, then the
    pseudo-labeled sets; ``weights``: one sample weight per directory, default 1.0) with Ray Train,
    then write ``layout.model_dir(round)`` from the best epoch's checkpoint.

    Ray must be initialised. The GPUs ``cluster.use_gpu`` asks for are waited for first
    (:func:`cluster.runtime.worker_resources`; ``GPUUnavailable`` when they do not come and
    ``cluster.cpu_fallback`` is off). ``components``: the run's :class:`cemr.pipeline.Components` (built on
    the driver when None; building them first also writes ``components/`` before the workers
    read it). ``init_model``: a model directory of this run whose weights the tagger starts from
    (``selftrain.warm_start``) instead of the seeded fresh init. A Ray Train run of the same round name already under ``<run_dir>/ray_train`` is
    resumed from its latest checkpoint (that is how a killed job continues a round).
    ``checkpoint_every``: optimizer steps between mid-epoch checkpoints (0: after every epoch only;
    None: ``cluster.checkpoint_every_steps``).
    """
    import ray
    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    from cemr.pipeline import build_components, new_tagger, save_round_model
    from cluster.runtime import worker_resources

    if not ray.is_initialized():
        raise TrainRoundError("Ray is not initialised: call cluster.runtime.init_ray first")
    started = time.perf_counter()
    name = round_name(round)
    workers = worker_resources(cfg.cluster)  # before anything starts: the GPUs, or an error / the fallback
    if workers["cpu_fallback"]:
        log(f"{name}: CPU FALLBACK: cluster.use_gpu=true but no GPU came within cluster.gpu_wait_s; "
            f"training on the CPU (cluster.cpu_fallback=true)")
    if components is None:
        components = build_components(cfg, layout, "cpu", log=log)
    dataset = training_dataset(train_paths, weights)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "run_dir": str(layout.root), "round": int(round),
                           "init_model": str(Path(init_model).resolve()) if init_model else None,
                           "checkpoint_every": int(cfg.cluster.checkpoint_every_steps if checkpoint_every is None
                                                   else checkpoint_every)},
        scaling_config=scaling_config(cfg, workers),
        run_config=run_config(cfg, layout, name),
        datasets={TRAIN_DATASET: dataset},
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    result = trainer.fit()
    if result.error is not None:  # fit() raises in Ray 2.60; kept for other versions
        raise TrainRoundError(f"{name}: training failed: {result.error}") from result.error
    ret = result.return_value or {}
    book = EpochBook.from_dict(ret["book"]) if "book" in ret else None
    candidates = list(result.best_checkpoints or [])
    ckpt, metrics = pick_best(candidates, book.best_epoch if book else None)
    with ckpt.as_directory() as d:
        state, ckpt_book = read_checkpoint(d)
    tagger, _ = new_tagger(cfg, components)
    tagger.load_checkpoint_state(state)
    best_epoch = int(metrics.get("epoch", ckpt_book.epoch))
    best_f1 = float(metrics.get(SCORE, 0.0))
    history = (book or ckpt_book).history
    model_dir = save_round_model(cfg, components, tagger, layout.model_dir(round), extra={
        "round": int(round), "best_dev_f1": best_f1, "best_epoch": best_epoch,
        "train_rows": int(ret.get("train_rows", 0)), "train_paths": [str(p) for p in train_paths],
        "weights": check_weights(train_paths, weights), "cpu_fallback": bool(workers["cpu_fallback"]),
    })
    seconds = time.perf_counter() - started
    log(f"{name}: best dev F1 {best_f1:.4f} at epoch {best_epoch}; model {model_dir} ({seconds:.0f}s)")
    return RoundTrainResult(
        model_dir=Path(model_dir), best_dev_f1=best_f1, best_epoch=best_epoch, history=history,
        train_rows=int(ret.get("train_rows", 0)), seconds=seconds, ray_train_path=str(result.path),
        resumed_from_epoch=int(ret.get("start_epoch", 0)),
        stop_reason=(book or ckpt_book).stop_reason, init_model=ret.get("init_model"),
        cpu_fallback=bool(workers["cpu_fallback"]),
    )
