"""The training loop: learning, determinism, early stopping, weights, batching, devices, exact resume."""
import dataclasses

import pytest
import torch

from cemr.config import ConfigError, TrainConfig
from cemr.tagger import build_tagger, make_collator
from cemr.training import (
    predict_spans,
    resolve_device,
    train_tagger,
    unwrap,
)
from tagger_fakes import tiny_lexicon, tiny_model_config, tiny_setup


def _setup(seed=0):
    torch.manual_seed(seed)
    sents, labels, vocab = tiny_setup()
    tagger = build_tagger(tiny_model_config(), labels, vocab)
    return tagger, make_collator(tagger, vocab, labels, tiny_lexicon()), sents, labels


def _cfg(**kw):
    base = dict(epochs=12, batch_size=4, lr=0.02, patience=20, seed=3, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_and_keeps_the_best_weights():
    tagger, collate, sents, labels = _setup()
    train, dev = sents[:10], sents[10:]
    seen = []
    result = train_tagger(tagger, train, dev, _cfg(), "cpu", collate=collate, log=lambda m: None,
                          on_epoch_end=lambda e, m, model: seen.append((e, m["dev_f1"], model is tagger)))
    assert [e for e, _, _ in seen] == list(range(1, 13)) and all(same for _, _, same in seen)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_dev_f1 == max(h["dev_f1"] for h in result.history) > 0.8
    assert result.history[result.best_epoch - 1]["dev_f1"] == result.best_dev_f1
    # the model ends with the best weights, which are also returned
    for k, v in result.best_state_dict.items():
        assert torch.equal(v, tagger.state_dict()[k]), k
    pred = predict_spans(tagger, dev, collate, labels, torch.device("cpu"))
    from cemr.metrics import evaluate
    f1 = evaluate({str(i): s.spans for i, s in enumerate(dev)}, {str(i): p for i, p in enumerate(pred)}).micro.f1
    assert f1 == pytest.approx(result.best_dev_f1)


def test_training_is_deterministic_with_a_seed():
    runs = []
    for _ in range(2):
        tagger, collate, sents, _ = _setup()
        r = train_tagger(tagger, sents[:8], sents[8:], _cfg(epochs=2), "cpu", collate=collate, log=lambda m: None)
        runs.append(r)
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    for k in runs[0].best_state_dict:
        assert torch.equal(runs[0].best_state_dict[k], runs[1].best_state_dict[k])


def test_early_stopping_after_patience_epochs():
    tagger, collate, sents, _ = _setup()
    # lr 0: nothing changes, dev F1 never improves after epoch 1
    logs = []
    r = train_tagger(tagger, sents[:6], sents[6:9], _cfg(epochs=10, lr=0.0, patience=2), "cpu",
                     collate=collate, log=logs.append)
    assert len(r.history) == 3 and r.stopped_early and r.best_epoch == 1
    assert any("early stop" in m for m in logs)


def test_sample_weights_zero_means_no_learning_from_those_sentences():
    tagger, collate, sents, _ = _setup()
    before = {k: v.clone() for k, v in tagger.state_dict().items()}
    r = train_tagger(tagger, sents[:4], [], _cfg(epochs=1, batch_size=2), "cpu", collate=collate,
                     sample_weights=[0.0] * 4, log=lambda m: None)
    assert r.history[0]["train_loss"] == 0.0
    for k, v in tagger.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="3 sample weights for 4"):
        train_tagger(tagger, sents[:4], [], _cfg(epochs=1), "cpu", collate=collate, sample_weights=[1.0] * 3)
    with pytest.raises(ValueError, match="sample weight -1.0 of training sentence 1"):
        train_tagger(tagger, sents[:4], [], _cfg(epochs=1), "cpu", collate=collate, sample_weights=[1.0, -1.0, 1, 1])


def test_ddp_style_wrapper_is_unwrapped():
    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel: forward + .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, batch):
            return self.module(batch)

    tagger, collate, sents, _ = _setup()
    wrapped = Wrapper(tagger)
    assert unwrap(wrapped) is tagger and unwrap(tagger) is tagger
    r = train_tagger(wrapped, sents[:6], sents[6:9], _cfg(epochs=1), "cpu", collate=collate, log=lambda m: None)
    assert "gru.weight_ih_l0" in r.best_state_dict and "dev_f1" in r.history[0]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match=r"train\.device \(or --device\) 'tpu': unknown device"):
        resolve_device("tpu")


def test_cuda_asked_where_torch_sees_none_is_a_config_error_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError) as err:
            resolve_device(name)
        message = str(err.value)
        assert "train.device" in message and "--device" in message and repr(name) in message
        assert "sees no CUDA device" in message and "available: cpu (" in message
    assert resolve_device("auto") == torch.device("cpu")


def test_a_cuda_index_out_of_range_lists_the_devices_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    expected = r"'cuda:2': this machine has 2 CUDA device\(s\); available: cpu, cuda:0, cuda:1"
    with pytest.raises(ConfigError, match=expected):
        resolve_device("cuda:2")


def test_learning_rate_decays_per_epoch_and_continues_after_a_resume():
    from cemr.training import epoch_lr

    cfg = _cfg(epochs=3, lr=0.01, lr_decay=0.5)
    assert [epoch_lr(cfg, e) for e in (1, 2, 3)] == pytest.approx([0.01, 0.005, 0.0025])
    with pytest.raises(ValueError, match="from 1"):
        epoch_lr(cfg, 0)
    tagger, collate, sents, _ = _setup()
    r = train_tagger(tagger, sents[:6], sents[6:9], cfg, "cpu", collate=collate, log=lambda m: None)
    assert [h["lr"] for h in r.history] == pytest.approx([0.01, 0.005, 0.0025])
    tagger, collate, sents, _ = _setup()
    r = train_tagger(tagger, sents[:6], sents[6:9], _cfg(epochs=1, lr=0.01, lr_decay=0.5), "cpu", collate=collate,
                     log=lambda m: None, start_epoch=2)  # epoch 3 of a resumed run
    assert [h["lr"] for h in r.history] == pytest.approx([0.0025])


def test_config_refuses_a_bad_learning_rate_schedule():
    from cemr.config import ConfigError, load_config

    assert load_config(None, ["train.lr_decay=0.9"]).train.lr_decay == 0.9
    for bad in (["train.lr_decay=0"], ["train.lr_decay=1.5"], ["train.lr=0"]):
        with pytest.raises(ConfigError, match="lr"):
            load_config(None, bad)


# -- fine-tuning BERT: its own learning rate, warmup, layer-wise decay; amp --------------------


def _bert_setup(freeze=False, layers=2):
    from cemr.features.bert import BertFeaturizer
    from cemr.features.chartokenizer import CharTokenizer

    torch.manual_seed(0)
    sents, labels, vocab = tiny_setup()
    bert = BertFeaturizer.from_scratch(CharTokenizer.build(s.text for s in sents), hidden_size=8, layers=layers,
                                       heads=2, intermediate_size=16, max_position=64, freeze=freeze, seed=0)
    mcfg = tiny_model_config()
    mcfg.bert.enabled, mcfg.bert.freeze = True, freeze
    tagger = build_tagger(mcfg, labels, vocab, bert=bert)
    return tagger, make_collator(tagger, vocab, labels, tiny_lexicon()), sents, labels


def test_a_fine_tuned_bert_gets_its_own_learning_rate_per_layer():
    from cemr.training import param_groups

    tagger, _, _, _ = _bert_setup(layers=2)
    groups = param_groups(tagger, _cfg(lr=0.01, bert_lr=1e-4, bert_layer_decay=0.5))
    assert [g["name"] for g in groups] == ["tagger", "bert.depth0", "bert.depth1", "bert.depth2"]
    assert [g["base_lr"] for g in groups] == pytest.approx([0.01, 2.5e-5, 5e-5, 1e-4])
    assert [g["warmup"] for g in groups] == [False, True, True, True]
    flat = [id(p) for g in groups for p in g["params"]]
    assert sorted(flat) == sorted(id(p) for p in tagger.parameters() if p.requires_grad)
    assert len(set(flat)) == len(flat)
    assert not any(id(p) in set(map(id, groups[0]["params"])) for p in tagger.bert.parameters())
    # bert_lr null: train.lr; a frozen BERT: one group, the old single learning rate
    assert param_groups(tagger, _cfg(lr=0.01, bert_lr=None))[-1]["base_lr"] == pytest.approx(0.01)
    frozen, _, _, _ = _bert_setup(freeze=True)
    assert [g["name"] for g in param_groups(frozen, _cfg())] == ["tagger"]


def test_warmup_rises_linearly_then_holds():
    from cemr.training import set_learning_rates, warmup_factor

    assert [warmup_factor(s, 4) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert warmup_factor(0, 0) == 1.0
    opt = torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": 0.1, "warmup": False},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": 0.01, "warmup": True}])
    set_learning_rates(opt, 0.5, 1, 4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.0025])


def test_fine_tuning_trains_bert_with_warmup_and_reports_its_learning_rate():
    tagger, collate, sents, _ = _bert_setup()
    before = {k: v.clone() for k, v in tagger.bert.state_dict().items()}
    lines = []
    cfg = _cfg(epochs=2, bert_lr=1e-3, bert_warmup=1.0)  # warmup over both epochs
    r = train_tagger(tagger, sents[:8], sents[8:10], cfg, "cpu", collate=collate, log=lines.append)
    assert [h["bert_lr"] for h in r.history] == pytest.approx([5e-4, 1e-3])  # half-way, then full
    assert any("fine-tuning BERT: lr 0.001 at the top layer" in m and "warmup 4 of 4 steps" in m for m in lines)
    changed = [k for k, v in tagger.bert.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.encoder.layer.1.") for k in changed)
    assert any(k.startswith("bert.") for k in r.best_state_dict)  # fine-tuned weights are checkpointed


def test_amp_bfloat16_trains_on_cpu_close_to_float32():
    losses = {}
    for amp in (False, True):
        tagger, collate, sents, _ = _bert_setup()
        cfg = _cfg(epochs=2, amp=amp, amp_dtype="bfloat16")
        seen = []
        if amp:
            hook = tagger.output.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        r = train_tagger(tagger, sents[:8], [], cfg, "cpu", collate=collate, log=lambda m: None)
        if amp:
            hook.remove()
            assert torch.bfloat16 in seen  # the forward really ran under CPU autocast
        losses[amp] = [h["train_loss"] for h in r.history]
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    assert losses[True] != losses[False]


def test_amp_float16_off_cuda_warns_and_trains_in_float32():
    from cemr.training import amp_settings

    assert amp_settings(_cfg(amp=False), torch.device("cpu")) == (None, False, None)
    assert amp_settings(_cfg(amp=True, amp_dtype="bfloat16"), torch.device("cpu"))[:2] == (torch.bfloat16, False)
    assert amp_settings(_cfg(amp=True, amp_dtype="float16"), torch.device("cuda"))[:2] == (torch.float16, True)
    tagger, collate, sents, _ = _setup()
    lines = []
    r16 = train_tagger(tagger, sents[:6], [], _cfg(epochs=1, amp=True), "cpu", collate=collate, log=lines.append)
    assert any("amp float16 requested but the device is not CUDA" in m for m in lines)
    tagger, collate, sents, _ = _setup()
    r32 = train_tagger(tagger, sents[:6], [], _cfg(epochs=1), "cpu", collate=collate, log=lambda m: None)
    assert r16.history[0]["train_loss"] == r32.history[0]["train_loss"]



# -- exact resume: optimizer, RNGs, position in the epoch, warmup --------------------------------


class _Interrupted(Exception):
    pass


def _weights(tagger):
    return {k: v.clone() for k, v in tagger.state_dict().items()}


def _comparable(history):
    """The epochs' metrics without wall-clock timings (those differ from run to run)."""
    return [{k: v for k, v in h.items() if "seconds" not in k and not k.endswith("_per_s")} for h in history]


def _interrupt_at(step, path):
    """An ``on_checkpoint`` hook: saves the state of optimizer step ``step`` to ``path`` (through
    the file, as a restarted worker would read it), then stops the run as a killed worker would."""
    from cemr.training import save_train_state

    def hook(state):
        if state.step == step:
            save_train_state(path, state)
            raise _Interrupted

    return hook


def _run(setup, cfg, train, dev, **kw):
    tagger, collate, _, _ = setup()
    result = train_tagger(tagger, train, dev, cfg, "cpu", collate=collate, log=lambda m: None, **kw)
    return tagger, result


@pytest.mark.parametrize("stop_step", [3, 4, 6])  # mid-epoch 1, its epoch end, mid-epoch 2 (4 steps/epoch)
def test_a_run_interrupted_and_resumed_equals_the_uninterrupted_run(tmp_path, stop_step):
    """Bit-identical on CPU (torch.equal, no tolerance): the same float ops in the same order,
    dropout drawn from the restored RNG, Adam's moments restored, the same batches."""
    from cemr.training import load_train_state

    sents = tiny_setup()[0]
    train, dev, cfg = sents[:8], sents[8:], _cfg(epochs=3, batch_size=2)
    whole, expected = _run(_setup, cfg, train, dev)
    with pytest.raises(_Interrupted):
        _run(_setup, cfg, train, dev, checkpoint_every=1, on_checkpoint=_interrupt_at(stop_step, tmp_path / "s.pt"))
    state = load_train_state(tmp_path / "s.pt")
    assert (state.epoch, state.batch) == divmod(stop_step, 4)
    resumed, result = _run(lambda: _setup(seed=99), cfg, train, dev, resume=state)  # other initial weights
    for k, v in _weights(whole).items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert _comparable(result.history) == _comparable(expected.history)  # epochs before the stop included
    assert (result.best_epoch, result.best_dev_f1) == (expected.best_epoch, expected.best_dev_f1)


def _fresh_start(lose, cfg):
    """What a restarted round without the state has in place of ``lose``."""
    from cemr.training import param_groups

    if lose == "optimizer":  # Adam afresh: no moments, step 0
        tagger = _setup()[0]
        return torch.optim.Adam(param_groups(tagger, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay).state_dict()
    if lose == "rng":  # dropout reseeded
        return {"cpu": torch.Generator().manual_seed(cfg.seed).get_state()}
    return torch.Generator().manual_seed(cfg.seed).get_state()  # batch_rng: epoch 1's batch order again


@pytest.mark.parametrize("lose", ["optimizer", "rng", "batch_rng"])
def test_each_restored_piece_matters(tmp_path, lose):
    """The comparison above can fail: resuming with one piece of the state replaced by what a
    fresh start has changes the final weights."""
    from cemr.training import load_train_state

    sents = tiny_setup()[0]
    train, dev, cfg = sents[:8], sents[8:], _cfg(epochs=3, batch_size=2)
    whole, _ = _run(_setup, cfg, train, dev)
    with pytest.raises(_Interrupted):
        _run(_setup, cfg, train, dev, checkpoint_every=1, on_checkpoint=_interrupt_at(6, tmp_path / "s.pt"))
    state = dataclasses.replace(load_train_state(tmp_path / "s.pt"), **{lose: _fresh_start(lose, cfg)})
    resumed, _ = _run(_setup, cfg, train, dev, resume=state)
    assert any(not torch.equal(resumed.state_dict()[k], v) for k, v in _weights(whole).items())


def test_fine_tuning_resumes_its_warmup_and_param_groups(tmp_path):
    """Fine-tuned BERT: the warmup position (the step count) and the per-layer groups come back:
    the resumed run's per-epoch BERT learning rate and final weights equal the whole run's."""
    from cemr.training import load_train_state

    sents = tiny_setup()[0]
    train, dev, cfg = sents[:8], sents[8:10], _cfg(epochs=2, batch_size=2, bert_lr=1e-3, bert_warmup=1.0)
    whole, expected = _run(_bert_setup, cfg, train, dev)
    with pytest.raises(_Interrupted):
        _run(_bert_setup, cfg, train, dev, checkpoint_every=3, on_checkpoint=_interrupt_at(3, tmp_path / "s.pt"))
    resumed, result = _run(_bert_setup, cfg, train, dev, resume=load_train_state(tmp_path / "s.pt"))
    assert [h["bert_lr"] for h in result.history] == [h["bert_lr"] for h in expected.history]
    for k, v in _weights(whole).items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_checkpoints_come_every_k_steps_and_after_every_epoch():
    sents = tiny_setup()[0]
    seen = []
    _run(_setup, _cfg(epochs=2, batch_size=2), sents[:8], [], checkpoint_every=3,
         on_checkpoint=lambda s: seen.append((s.epoch, s.batch, s.step)))
    assert seen == [(0, 3, 3), (1, 0, 4), (1, 2, 6), (2, 0, 8)]  # 4 batches per epoch
    seen.clear()
    _run(_setup, _cfg(epochs=2, batch_size=2), sents[:8], [], on_checkpoint=lambda s: seen.append(s.step))
    assert seen == [4, 8]  # checkpoint_every 0: epoch ends only


def test_a_state_that_does_not_fit_the_run_is_refused(tmp_path):
    from cemr.training import load_train_state, save_train_state

    sents = tiny_setup()[0]
    cfg = _cfg(epochs=2, batch_size=2)
    states = []
    _run(_setup, cfg, sents[:8], [], on_checkpoint=states.append)
    with pytest.raises(ValueError, match="saved with 1 worker.* and 8 training sentences, this run has 1 and 6"):
        _run(_setup, cfg, sents[:6], [], resume=states[0])
    with pytest.raises(ValueError, match="epoch 2 batch 0, past train.epochs=1"):
        _run(_setup, _cfg(epochs=1, batch_size=2), sents[:8], [], resume=states[1])
    with pytest.raises(ValueError, match="start_epoch must be 0"):
        _run(_setup, cfg, sents[:8], [], resume=states[0], start_epoch=1)
    (tmp_path / "bad.pt").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="bad.pt: not a readable training state"):
        load_train_state(tmp_path / "bad.pt")
    save_train_state(tmp_path / "ok.pt", states[1])
    assert load_train_state(tmp_path / "ok.pt").step == 8  # a finished run's state: resuming it trains nothing
    _, r = _run(_setup, cfg, sents[:8], [], resume=states[1])
    assert [h["epoch"] for h in r.history] == [1, 2]


def test_a_state_saved_as_early_stopping_struck_resumes_to_the_same_stop():
    sents = tiny_setup()[0]
    cfg = _cfg(epochs=6, lr=0.0, patience=1, batch_size=2)  # lr 0: no gain after epoch 1
    states = []
    _, whole = _run(_setup, cfg, sents[:6], sents[6:9], on_checkpoint=states.append)
    assert whole.stopped_early and len(whole.history) == 2
    _, again = _run(_setup, cfg, sents[:6], sents[6:9], resume=states[-1])
    assert again.stopped_early and _comparable(again.history) == _comparable(whole.history)


def test_an_epoch_shows_a_progress_bar_on_a_terminal_and_nothing_off_it(monkeypatch):
    import io
    import sys

    tagger, collate, sents, labels = _setup()
    monkeypatch.delenv("CEMR_QUIET", raising=False)
    monkeypatch.delenv("CEMR_PROGRESS", raising=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stderr", fake)
    train_tagger(tagger, sents[:6], sents[6:9], _cfg(epochs=1), "cpu", collate=collate, log=lambda m: None)
    assert "epoch 1/1" in fake.getvalue() and "batch" in fake.getvalue()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no bar
    train_tagger(tagger, sents[:6], sents[6:9], _cfg(epochs=1), "cpu", collate=collate, log=lambda m: None)
    assert "epoch 1/1" not in sys.stderr.getvalue()


def test_a_loss_that_is_not_finite_stops_training_naming_the_epoch(monkeypatch):
    tagger, collate, sents, labels = _setup()
    real = type(tagger).forward
    monkeypatch.setattr(type(tagger), "forward", lambda self, batch: real(self, batch) * float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1: the training loss became nan"):
        train_tagger(tagger, sents[:6], sents[6:9], _cfg(epochs=2), "cpu", collate=collate, log=lambda m: None)
