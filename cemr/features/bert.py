"""Char-level BERT: the ``h_c`` feature of every char, and masked-LM (continued) pretraining.

Checkpoints are local directories only (``save_pretrained`` files + a BERT ``vocab.txt``): a hub
id is refused, never fetched. Texts are mapped to ids char by char (:class:`CharTokenizer`), so
token i+1 (after ``[CLS]``) is char i. Texts longer than the model's positions are windowed:
windows of ``window`` chars every ``stride`` chars (the last one aligned to the text's end), and
each char takes its vector from the window in which it is most central. Nothing is truncated.

Any local ``BertModel`` directory with a char-level vocab loads: a bert-base-chinese copy or a
medical BERT (12 layers, 768 wide, 21,128 tokens), or a small one pretrained here. BERT's forward
passes can run under autocast (``autocast``: ``bf16`` on GPU and CPU, ``fp16``; ``off``: float32);
the featurizer's output is float32 either way. ``featurizer.json`` records window, stride,
autocast and window batch size, so a model directory predicts as it was configured.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import BertConfig as HFBertConfig
from transformers import BertForMaskedLM, BertModel
from transformers.utils import logging as hf_logging

from cemr.config import BertConfig
from cemr.batching import length_batches
from cemr.features.bilm import chunk_text, split_heldout
from cemr.features.chartokenizer import VOCAB_FILE, CharTokenizer
from cemr.features.frozen import FreezableFeaturizer
from cemr.progress import progress

FEATURIZER_FILE = "featurizer.json"
IGNORE = -100
# model.bert.autocast -> the dtype of torch.autocast (None: off, float32)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_WINDOW_BATCH_SIZE = 64

Log = Callable[[str], None]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports for the duration (restored after)."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def local_checkpoint_dir(path: str | Path) -> Path:
    """``path`` as an existing local directory with a ``config.json``; hub ids are refused."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{path}: not a local checkpoint directory (cemr never downloads from a model hub)"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p / 'config.json'}: missing (not a save_pretrained directory)")
    if not (p / VOCAB_FILE).is_file():
        raise FileNotFoundError(f"{p / VOCAB_FILE}: missing (a BERT vocab.txt is needed for char ids)")
    return p


def autocast_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of an autocast setting (``off`` -> None); anything else is a ValueError."""
    if name not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast {name!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[name]


def autocast_context(device: torch.device, name: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type with the dtype of ``name`` (a no-op for ``off``)."""
    dtype = autocast_dtype(name)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a ``BertModel`` parameter for layer-wise learning-rate decay: 0 for the
    embeddings, ``i + 1`` for ``encoder.layer.i``, ``num_layers + 1`` for anything above (the
    pooler, when present)."""
    parts = name.split(".")
    if parts[0] == "embeddings":
        return 0
    if parts[:2] == ["encoder", "layer"] and len(parts) > 2 and parts[2].isdigit():
        return int(parts[2]) + 1
    return num_layers + 1


# ----------------------------------------------------------------------------------------------
# Windowing (pure)
# ----------------------------------------------------------------------------------------------


def plan_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows over a text of ``n`` chars: ``(start, end, keep_start, keep_end)`` each.

    Window k covers chars ``[start, end)`` and supplies the vectors of chars ``[keep_start,
    keep_end)``: those for which it is the most central of the windows covering them (ties go to
    the earlier window). The keep ranges tile ``[0, n)`` exactly. ``n <= window`` gives one window.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window} stride={stride}")
    if n <= 0:
        return []
    if n <= window:
        return [(0, n, 0, n)]
    starts = list(range(0, n - window, stride)) + [n - window]
    plan = []
    keep_start = 0
    for k, s in enumerate(starts):
        if k + 1 < len(starts):
            # char t is nearer window k's centre than window k+1's iff 2t <= s_k + s_{k+1} + window - 1
            keep_end = (s + starts[k + 1] + window - 1) // 2 + 1
        else:
            keep_end = n
        plan.append((s, s + window, keep_start, keep_end))
        keep_start = keep_end
    return plan


# ----------------------------------------------------------------------------------------------
# Featurizer
# ----------------------------------------------------------------------------------------------


def bert_model_args(cfg: BertConfig) -> dict[str, Any]:
    """Flat from-scratch architecture arguments of :meth:`BertFeaturizer.from_scratch`."""
    return {
        "hidden_size": cfg.hidden_size,
        "layers": cfg.layers,
        "heads": cfg.heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position": cfg.max_position,
    }


def hf_config(vocab_size: int, pad_id: int, hidden_size: int, layers: int, heads: int,
              intermediate_size: int, max_position: int) -> HFBertConfig:
    """A transformers ``BertConfig`` for a small from-scratch model."""
    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of heads {heads}")
    if max_position < 3:
        raise ValueError("max_position must be >= 3 ([CLS] + a char + [SEP])")
    return HFBertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position,
        pad_token_id=pad_id,
    )


class BertFeaturizer(FreezableFeaturizer):
    """``forward(texts)`` -> (B, T, hidden): the last BERT layer at each char (``[CLS]``/``[SEP]``
    dropped), windowed for long texts.

    ``freeze=True``: no grads and eval mode, kept even when a parent calls ``.train()``;
    ``freeze=False``: fine-tuned with whatever model contains it. ``window`` (chars) is capped at
    the model's positions minus 2 (default: that cap); ``stride`` at ``window`` (default: half).
    ``window_batch_size`` windows go through BERT at a time (its activations, and so the GPU
    memory of a pass, grow with it). ``autocast``: ``off``, ``bf16`` or ``fp16``, BERT's passes
    under ``torch.autocast`` of that dtype on the model's device.
    """

    def __init__(self, model: BertModel, tokenizer: CharTokenizer, window: int | None = None,
                 stride: int | None = None, freeze: bool = True,
                 window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE, autocast: str = "off"):
        super().__init__()
        max_chars = model.config.max_position_embeddings - 2
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"{tokenizer.source}: vocab has {len(tokenizer)} tokens but the model only {model.config.vocab_size}"
            )
        window = max_chars if window is None else min(window, max_chars)
        stride = max(1, window // 2) if stride is None else min(stride, window)
        plan_windows(window + 1, window, stride)  # validates window/stride
        autocast_dtype(autocast)  # validates the name
        if window_batch_size < 1:
            raise ValueError(f"window_batch_size must be >= 1, got {window_batch_size}")
        self.autocast = autocast
        self.model = model
        self.tokenizer = tokenizer
        self.window = window
        self.stride = stride
        self.window_batch_size = window_batch_size
        self.dim = int(model.config.hidden_size)
        self.set_frozen(freeze)

    def encode_unwindowed(self, texts: Sequence[str]) -> Tensor:
        """One BERT pass over whole texts -> (B, T, hidden); each text must fit the model."""
        T = max((len(t) for t in texts), default=0)
        limit = self.model.config.max_position_embeddings - 2
        if T > limit:
            raise ValueError(f"a text of {T} chars exceeds the model's {limit} positions: use forward() (windowed)")
        ids, mask = self.tokenizer.batch(texts)  # (B, T+2)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with autocast_context(self.device, self.autocast):
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T+2, H)
        # char i is token i+1; it is a real char iff token i+2 is still inside the text ([SEP] at len+1)
        return hidden[:, 1:T + 1] * mask[:, 2:T + 2].unsqueeze(-1).to(hidden.dtype)  # (B, T, H)

    def forward(self, texts: Sequence[str]) -> Tensor:
        """texts (B strings) -> (B, T, hidden), T = longest text; zeros after each text's end."""
        T = max((len(t) for t in texts), default=0)
        pieces = [
            (b, s, e, ks, ke)
            for b, t in enumerate(texts)
            for (s, e, ks, ke) in plan_windows(len(t), self.window, self.stride)
        ]
        pieces.sort(key=lambda p: p[2] - p[1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = torch.zeros(len(texts), T, self.dim, device=self.device)
            for i in range(0, len(pieces), self.window_batch_size):
                group = pieces[i:i + self.window_batch_size]
                hidden = self.encode_unwindowed([texts[b][s:e] for b, s, e, _, _ in group])  # (G, W, H)
                for g, (b, s, _e, ks, ke) in enumerate(group):
                    out[b, ks:ke] = hidden[g, ks - s:ke - s].to(out.dtype)
            return out

    # -- construction and persistence ----------------------------------------------------------

    @classmethod
    def from_scratch(cls, tokenizer: CharTokenizer, hidden_size: int = 128, layers: int = 2, heads: int = 2,
                     intermediate_size: int = 256, max_position: int = 256, window: int | None = None,
                     stride: int | None = None, freeze: bool = True, seed: int = 0) -> "BertFeaturizer":
        """A randomly initialised small BERT over ``tokenizer``'s vocab (seeded)."""
        config = hf_config(
            len(tokenizer), tokenizer.pad_id, hidden_size, layers, heads, intermediate_size, max_position
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertModel(config, add_pooling_layer=False)
        return cls(model, tokenizer, window, stride, freeze)

    def layer_parameters(self) -> list[tuple[int, list[nn.Parameter]]]:
        """``(depth, parameters)`` per depth of :func:`layer_depth` (embeddings first), trainable
        parameters only: the groups of layer-wise learning-rate decay."""
        layers = int(self.model.config.num_hidden_layers)
        by_depth: dict[int, list[nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                by_depth.setdefault(layer_depth(name, layers), []).append(p)
        return sorted(by_depth.items())

    def save(self, directory: str | Path) -> None:
        """``save_pretrained`` files + ``vocab.txt`` + ``featurizer.json`` (window, stride,
        autocast, window batch size)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.model.save_pretrained(d)
        self.tokenizer.save(d)
        write_featurizer_json(d, self.window, self.stride, self.autocast, self.window_batch_size)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", freeze: bool = True,
             window: int | None = None, stride: int | None = None, autocast: str | None = None,
             window_batch_size: int | None = None) -> "BertFeaturizer":
        """Any local ``BertModel`` checkpoint directory with a char-level ``vocab.txt`` (ours, a
        bert-base-chinese copy, a medical BERT; ``BertForMaskedLM`` files load too, the MLM head
        left out).

        ``window``/``stride``/``autocast``/``window_batch_size`` default to the directory's
        ``featurizer.json``, else the model's positions and half of that, ``off`` and 64.
        """
        d = local_checkpoint_dir(directory)
        saved = read_featurizer_json(d)
        window = saved.get("window") if window is None else window
        stride = saved.get("stride") if stride is None else stride
        autocast = saved.get("autocast", "off") if autocast is None else autocast
        if window_batch_size is None:
            window_batch_size = saved.get("window_batch_size", DEFAULT_WINDOW_BATCH_SIZE)
        tokenizer = CharTokenizer.from_vocab_file(d / VOCAB_FILE)
        with quiet_transformers():
            model = BertModel.from_pretrained(str(d), local_files_only=True, add_pooling_layer=False)
        model.to(device)
        try:
            return cls(model, tokenizer, window, stride, freeze, window_batch_size, autocast)
        except ValueError as exc:
            raise ValueError(f"{d}: {exc}") from exc


def write_featurizer_json(directory: Path, window: int, stride: int, autocast: str = "off",
                          window_batch_size: int = DEFAULT_WINDOW_BATCH_SIZE) -> None:
    data = {"window": window, "stride": stride, "autocast": autocast, "window_batch_size": window_batch_size}
    (directory / FEATURIZER_FILE).write_text(json.dumps(data), encoding="utf-8")


def read_featurizer_json(directory: Path) -> dict[str, Any]:
    """The settings of ``featurizer.json`` (``{}`` when there is none; older files have only
    window and stride). A malformed file or value is a ValueError naming the file."""
    path = directory / FEATURIZER_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    out: dict[str, Any] = {k: int(data[k]) for k in ("window", "stride", "window_batch_size")
                           if data.get(k) is not None}
    if data.get("autocast") is not None:
        if data["autocast"] not in AUTOCAST_DTYPES:
            raise ValueError(f"{path}: autocast {data['autocast']!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
        out["autocast"] = data["autocast"]
    return out


# ----------------------------------------------------------------------------------------------
# Masked-LM pretraining
# ----------------------------------------------------------------------------------------------


def mask_tokens(input_ids: Tensor, maskable: Tensor, mask_prob: float, mask_id: int, random_ids: Tensor,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """BERT masking: each maskable position is chosen with ``mask_prob`` (at least one per row
    that has any); a chosen one becomes ``[MASK]`` (80%), a random id from ``random_ids`` (10%) or
    stays (10%).

    input_ids (B, T) long, maskable (B, T) bool -> (masked input_ids (B, T), labels (B, T) with
    -100 where not chosen). Runs on CPU tensors; ``generator`` makes it reproducible.
    """
    B, T = input_ids.shape
    chosen = (torch.rand(B, T, generator=generator) < mask_prob) & maskable  # (B, T)
    need = maskable.any(1) & ~chosen.any(1)  # (B,)
    if need.any():
        noise = torch.rand(B, T, generator=generator).masked_fill(~maskable, -1.0)
        pick = noise.argmax(1)  # (B,)
        rows = need.nonzero().squeeze(1)
        chosen[rows, pick[rows]] = True
    labels = input_ids.masked_fill(~chosen, IGNORE)
    action = torch.rand(B, T, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    out = input_ids.clone()
    out[to_mask] = mask_id
    picks = random_ids[torch.randint(len(random_ids), (B, T), generator=generator)]
    out[to_random] = picks[to_random]
    return out, labels


class _MLMData:
    """Char id lists -> padded, masked batches ``(input_ids, attention_mask, labels)`` (B, T+2)."""

    def __init__(self, tokenizer: CharTokenizer, mask_prob: float):
        self.tok = tokenizer
        self.mask_prob = mask_prob
        special = set(tokenizer.special_ids())
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)
        if len(self.random_ids) == 0:
            raise ValueError("the vocab has no ordinary tokens to predict")
        self.special = torch.tensor(sorted(special), dtype=torch.long)

    def batch(self, seqs: Sequence[Sequence[int]], generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        width = max(len(s) for s in seqs) + 2
        ids = torch.full((len(seqs), width), self.tok.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s) + 2] = torch.tensor([self.tok.cls_id, *s, self.tok.sep_id], dtype=torch.long)
            attn[b, : len(s) + 2] = 1
        maskable = attn.bool() & ~torch.isin(ids, self.special)
        masked, labels = mask_tokens(ids, maskable, self.mask_prob, self.tok.mask_id, self.random_ids, generator)
        return masked, attn, labels


@torch.no_grad()
def mlm_eval(
    model: BertForMaskedLM, batches: Sequence[tuple[Tensor, Tensor, Tensor]], device: torch.device
) -> dict[str, float]:
    """Token-weighted masked-LM loss and accuracy over fixed (pre-masked) batches."""
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for ids, attn, labels in progress(batches, desc="bert mlm held-out", unit="batch"):
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # (B, T, V)
        labels = labels.to(device)
        total += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"))
        sel = labels != IGNORE
        correct += int((logits.argmax(-1)[sel] == labels[sel]).sum())
        count += int(sel.sum())
    model.train(was_training)
    return {"loss": total / max(count, 1), "accuracy": correct / max(count, 1), "tokens": count}


def _warmup_linear(total_steps: int, warmup_fraction: float = 0.06) -> Callable[[int], float]:
    warm = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return factor


def pretrain_bert_mlm(
    texts: Iterable[str],
    cfg: BertConfig,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    init_checkpoint: str | Path | None = None,
    log: Log | None = None,
    heldout_fraction: float = 0.1,
    clip_norm: float = 1.0,
) -> dict[str, float]:
    """Masked-LM pretraining of a char BERT on ``texts``; saves a loadable checkpoint in ``out_dir``.

    From ``init_checkpoint`` (a local directory with its ``vocab.txt``: continued pretraining,
    "CbBERT") or from scratch with ``cfg``'s small architecture and a vocab built from the texts.
    Texts are cut into pieces of at most ``min(cfg.window, positions - 2)`` chars; at most
    ``cfg.pretrain_max_sentences`` pieces are used (seeded sample). 15% of chars are chosen
    (80/10/10), AdamW with warmup and linear decay. Metrics: held-out MLM loss/accuracy before
    and after (the same fixed masking both times), training loss of the last epoch, counts.
    """
    say = log or (lambda _msg: None)
    device = torch.device(device)
    out = Path(out_dir)
    texts = list(texts)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if init_checkpoint is not None:
            src = local_checkpoint_dir(init_checkpoint)
            tokenizer = CharTokenizer.from_vocab_file(src / VOCAB_FILE)
            with quiet_transformers():
                model = BertForMaskedLM.from_pretrained(str(src), local_files_only=True)
        else:
            tokenizer = CharTokenizer.build(texts)
            config = hf_config(len(tokenizer), tokenizer.pad_id, **bert_model_args(cfg))
            model = BertForMaskedLM(config)
        model.to(device)
        max_chars = min(cfg.window, model.config.max_position_embeddings - 2)
        pieces = [p for t in texts for p in chunk_text(t, max_chars)]
        available = len(pieces)
        if cfg.pretrain_max_sentences is not None and available > cfg.pretrain_max_sentences:
            random.Random(seed).shuffle(pieces)
            pieces = pieces[: cfg.pretrain_max_sentences]
        encoded = [tokenizer.encode(p) for p in pieces]
        # a piece made only of [UNK] chars has nothing to predict: counted in the metrics, not used
        usable = [ids for ids in encoded if any(i != tokenizer.unk_id for i in ids)]
        train, held = split_heldout(usable, heldout_fraction, seed)
        data = _MLMData(tokenizer, cfg.mask_prob)
        held_gen = torch.Generator().manual_seed(seed + 1)
        held_batches = [
            data.batch([held[i] for i in b], held_gen)
            for b in length_batches([len(s) for s in held], cfg.pretrain_batch_size)
        ]
        before = mlm_eval(model, held_batches, device)
        say(f"bert mlm: held-out loss before {before['loss']:.4f} ({before['tokens']} masked chars)")
        batches_per_epoch = math.ceil(len(train) / cfg.pretrain_batch_size)
        total_steps = batches_per_epoch * cfg.pretrain_epochs
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(total_steps))
        order = torch.Generator().manual_seed(seed + 2)  # batch order (cemr.batching)
        gen = torch.Generator().manual_seed(seed)  # masking
        lengths = [len(s) for s in train]
        last_epoch_loss = float("nan")
        step = 0
        for epoch in range(cfg.pretrain_epochs):
            model.train()
            total, n = 0.0, 0
            bar = progress(length_batches(lengths, cfg.pretrain_batch_size, order),
                           desc=f"bert mlm epoch {epoch + 1}/{cfg.pretrain_epochs}", unit="batch")
            for batch in bar:
                ids, attn, labels = data.batch([train[i] for i in batch], gen)
                loss = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                optimizer.step()
                scheduler.step()
                total += loss.item()
                n += 1
                step += 1
                bar.set_postfix(loss=f"{total / n:.4f}", refresh=False)
            last_epoch_loss = total / max(n, 1)
            say(f"bert mlm epoch {epoch + 1}/{cfg.pretrain_epochs}: train loss {last_epoch_loss:.4f}")
        after = mlm_eval(model, held_batches, device)
        say(f"bert mlm: held-out loss after {after['loss']:.4f}")
        out.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            model.save_pretrained(out)
        tokenizer.save(out)
        write_featurizer_json(out, min(cfg.window, max_chars), min(cfg.stride, max_chars), cfg.autocast,
                              cfg.window_batch_size)
    return {
        "mlm_loss_before": before["loss"],
        "mlm_loss_after": after["loss"],
        "mlm_accuracy_before": before["accuracy"],
        "mlm_accuracy_after": after["accuracy"],
        "train_loss_last_epoch": last_epoch_loss,
        "steps": step,
        "epochs": cfg.pretrain_epochs,
        "vocab_size": len(tokenizer),
        "sentences_available": available,
        "sentences_all_unknown": len(encoded) - len(usable),
        "sentences_train": len(train),
        "sentences_heldout": len(held),
        "heldout_masked_chars": before["tokens"],
        "seconds": time.perf_counter() - started,
    }
