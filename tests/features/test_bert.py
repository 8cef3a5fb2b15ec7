import pytest
import torch
from transformers import BertModel

from cemr.config import BertConfig
from cemr.corpus.document import CorpusError
from cemr.features.bert import (
    AUTOCAST_DTYPES,
    FEATURIZER_FILE,
    IGNORE,
    BertFeaturizer,
    bert_model_args,
    hf_config,
    layer_depth,
    mask_tokens,
    plan_windows,
    pretrain_bert_mlm,
)
from cemr.features.chartokenizer import CharTokenizer

TEXTS = ["患者头痛三天", "否认高血压病史", "查体：血压 120/80", "腹部CT示肝脏占位"]
TINY = dict(hidden_size=16, layers=1, heads=2, intermediate_size=32, max_position=16)


def tiny_bert(window=None, stride=None, freeze=True) -> BertFeaturizer:
    tok = CharTokenizer.build(TEXTS + ["长文本测试用的字符"])
    return BertFeaturizer.from_scratch(tok, **TINY, window=window, stride=stride, freeze=freeze, seed=0)


def write_chinese_style_vocab(path):
    """A vocab laid out like bert-base-chinese's: [PAD], [unusedN], [UNK] [CLS] [SEP] [MASK],
    single chars, ## pieces, lowercase Latin only."""
    tokens = ["[PAD]", "[unused1]", "[unused2]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list("患者头痛三天血压") + ["##痛", "##a", "a", "c", "t", "1", "2", "0", "/"]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


# -- tokenizer ---------------------------------------------------------------------------------


def test_built_vocab_starts_with_the_specials_and_maps_whitespace_to_its_own_token():
    tok = CharTokenizer.build(["ab a\tb"])
    assert tok.tokens[:6] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]"]
    ids = tok.encode("a b\n?")
    assert len(ids) == 5
    assert ids[1] == ids[3] == tok.whitespace_id != tok.unk_id
    assert ids[4] == tok.unk_id


def test_every_char_is_one_token_and_char_i_is_token_i_plus_1():
    tok = CharTokenizer.build(TEXTS)
    texts = ["患者 头痛\t😀x", "查体"]
    ids, mask = tok.batch(texts)
    assert ids.shape == mask.shape == (2, len(texts[0]) + 2)
    for b, text in enumerate(texts):
        assert ids[b, 0] == tok.cls_id
        assert ids[b, len(text) + 1] == tok.sep_id
        assert ids[b, 1:len(text) + 1].tolist() == tok.encode(text)
        assert mask[b].sum() == len(text) + 2
    assert ids[1, 4:].tolist() == [tok.pad_id] * (ids.shape[1] - 4)


def test_a_bert_base_chinese_style_vocab_file_keeps_offsets(tmp_path):
    tokens = write_chinese_style_vocab(tmp_path / "vocab.txt")
    tok = CharTokenizer.from_vocab_file(tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 3, 4, 5, 6)
    text = "患者头痛 CT 120/80 Ａ？"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert [tokens[i] for i in ids[:4]] == list("患者头痛")
    assert tokens[ids[4]] == "[unused1]"
    assert [tokens[i] for i in ids[5:7]] == ["c", "t"]  # uppercase -> lowercase entry
    assert tokens[ids[text.index("Ａ")]] == "a"  # full-width -> NFKC -> lowercase
    assert ids[-1] == tok.unk_id


def test_vocab_problems_name_the_file_and_line(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"vocab.txt: vocab lacks the special token\(s\) \[MASK\]"):
        CharTokenizer.from_vocab_file(p)
    p.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n好\n好\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"vocab.txt:7: duplicate token '好'"):
        CharTokenizer.from_vocab_file(p)


# -- windowing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("window,stride", [(4, 2), (5, 2), (6, 3), (6, 6), (7, 1), (10, 7)])
def test_window_plan_tiles_the_text_with_the_most_central_window(window, stride):
    for n in range(0, 40):
        plan = plan_windows(n, window, stride)
        kept = [t for (_, _, ks, ke) in plan for t in range(ks, ke)]
        assert kept == list(range(n))
        for s, e, ks, ke in plan:
            assert 0 <= s <= ks <= ke <= e <= n and e - s == min(window, n)
            for t in range(ks, ke):
                mine = abs(t - (s + e - 1) / 2)
                others = [abs(t - (s2 + e2 - 1) / 2) for s2, e2, _, _ in plan if s2 <= t < e2]
                assert mine <= min(others)


def test_window_plan_refuses_a_stride_larger_than_the_window():
    with pytest.raises(ValueError, match="stride"):
        plan_windows(10, 4, 5)


def test_output_is_one_vector_per_char_without_cls_and_sep():
    feat = tiny_bert()
    out = feat(["患者头痛", "否认高血压病史", ""])
    assert out.shape == (3, 7, 16)
    assert feat.dim == 16
    assert out[0, 4:].abs().sum() == 0 and out[2].abs().sum() == 0
    assert (out[1].abs().sum(-1) > 0).all()
    ids, mask = feat.tokenizer.batch(["患者头痛"])
    full = feat.model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out[0, :4], full[0, 1:5])


def test_a_text_shorter_than_the_window_is_encoded_as_a_whole():
    feat = tiny_bert(window=10, stride=5)
    texts = ["患者头痛三天", "查体"]
    torch.testing.assert_close(feat(texts), feat.encode_unwindowed(texts), rtol=1e-5, atol=1e-5)


def test_a_text_longer_than_the_model_is_windowed_not_truncated():
    feat = tiny_bert()  # 16 positions: 14 chars a window
    text = "长文本测试用的字符" * 5  # 45 chars
    out = feat([text, "患者"])
    assert out.shape == (2, 45, 16)
    assert (out[0].abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="exceeds"):
        feat.encode_unwindowed([text])


def test_each_char_takes_the_vector_of_its_most_central_window():
    feat = tiny_bert(window=6, stride=3)
    text = "患者头痛三天否认高血压病史查体"  # 15 chars
    out = feat([text])[0]
    plan = plan_windows(len(text), 6, 3)
    assert len(plan) > 2
    for s, e, ks, ke in plan:
        alone = feat.encode_unwindowed([text[s:e]])[0]
        torch.testing.assert_close(out[ks:ke], alone[ks - s:ke - s], rtol=1e-5, atol=1e-5)


def test_batch_neighbours_do_not_change_a_text():
    feat = tiny_bert()
    alone = feat(["患者头痛"])[0]
    batched = feat(["患者头痛", "腹部CT示肝脏占位" * 3])[0, :4]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-5)


def test_frozen_by_default_and_fine_tunable_when_asked():
    frozen = tiny_bert()
    assert not any(p.requires_grad for p in frozen.parameters())
    torch.nn.Sequential(frozen).train()
    assert not frozen.training and not frozen.model.training
    tuned = tiny_bert(freeze=False)
    tuned.train()
    tuned(["患者头痛" * 5]).sum().backward()
    grads = [p.grad for p in tuned.model.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_save_and_load_give_identical_outputs(tmp_path):
    feat = tiny_bert(window=8, stride=4)
    feat.save(tmp_path / "bert")
    assert (tmp_path / "bert" / "vocab.txt").is_file()
    back = BertFeaturizer.load(tmp_path / "bert")
    assert (back.window, back.stride) == (8, 4)
    texts = ["患者头痛三天" * 4, "查体"]
    torch.testing.assert_close(back(texts), feat(texts), rtol=0, atol=0)


def test_any_local_checkpoint_with_a_vocab_txt_loads(tmp_path):
    tokens = write_chinese_style_vocab(tmp_path / "vocab.txt")
    model = BertModel(hf_config(len(tokens), 0, **TINY))
    model.save_pretrained(tmp_path)
    feat = BertFeaturizer.load(tmp_path, window=10, stride=5)
    assert feat.tokenizer.tokens == tokens
    assert feat(["患者头痛 CT"]).shape == (1, 7, 16)


def test_a_masked_lm_checkpoint_loads_as_its_bert_without_the_head(tmp_path):
    """A bert-base-chinese download holds BertForMaskedLM weights (``bert.``-prefixed, an MLM
    head): the featurizer gets exactly the encoder's weights."""
    from transformers import BertForMaskedLM

    tokens = write_chinese_style_vocab(tmp_path / "vocab.txt")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(hf_config(len(tokens), 0, **TINY))
    mlm.save_pretrained(tmp_path)
    feat = BertFeaturizer.load(tmp_path)
    theirs = mlm.bert.state_dict()
    for k, v in feat.model.state_dict().items():
        torch.testing.assert_close(v, theirs[k], rtol=0, atol=0, msg=k)


def test_autocast_bf16_on_cpu_runs_and_stays_close_to_float32():
    feat = tiny_bert(window=8, stride=4)
    texts = ["患者头痛三天" * 3, "查体"]
    ref = feat(texts)
    feat.autocast = "bf16"
    seen = []
    hook = feat.model.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype))
    low = feat(texts)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # BERT really ran in bf16
    assert low.dtype == torch.float32  # the feature stays float32 (cached and fused as such)
    torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05)
    assert not torch.equal(low, ref)
    assert (low[1, 2:] == 0).all()  # padding still zero


def test_bfloat16_weights_run_windowed_and_give_float32_features():
    # cemr.predictor.set_precision("bf16") casts a featurizer's weights; its forward must follow
    feat = tiny_bert(window=8, stride=4)
    texts = ["患者头痛三天" * 3, "查体"]
    ref = feat(texts)
    feat.to(torch.bfloat16)
    assert feat.model.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    low = feat(texts)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05)
    assert not torch.equal(low, ref)
    assert (low[1, 2:] == 0).all()  # padding still zero


def test_autocast_and_window_batch_are_saved_and_can_be_overridden(tmp_path):
    feat = tiny_bert(window=8, stride=4)
    feat.autocast, feat.window_batch_size = "bf16", 3
    feat.save(tmp_path / "bert")
    back = BertFeaturizer.load(tmp_path / "bert")
    assert (back.autocast, back.window_batch_size, back.window) == ("bf16", 3, 8)
    assert BertFeaturizer.load(tmp_path / "bert", autocast="off", window_batch_size=7).window_batch_size == 7
    # a featurizer.json from before these settings: the defaults
    (tmp_path / "bert" / FEATURIZER_FILE).write_text('{"window": 8, "stride": 4}', encoding="utf-8")
    old = BertFeaturizer.load(tmp_path / "bert")
    assert (old.autocast, old.window_batch_size) == ("off", 64)
    (tmp_path / "bert" / FEATURIZER_FILE).write_text('{"autocast": "half"}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"featurizer.json: autocast 'half': expected one of off, bf16, fp16"):
        BertFeaturizer.load(tmp_path / "bert")
    (tmp_path / "bert" / FEATURIZER_FILE).unlink()
    with pytest.raises(ValueError, match="bert: autocast 'fp8': expected one of"):
        BertFeaturizer.load(tmp_path / "bert", autocast="fp8")


def test_autocast_names_match_the_config_choices():
    from cemr.config import BERT_AUTOCAST

    assert tuple(AUTOCAST_DTYPES) == BERT_AUTOCAST


def test_layer_groups_cover_every_trainable_weight_by_depth():
    assert layer_depth("embeddings.word_embeddings.weight", 12) == 0
    assert layer_depth("encoder.layer.0.attention.self.query.weight", 12) == 1
    assert layer_depth("encoder.layer.11.output.dense.bias", 12) == 12
    assert layer_depth("pooler.dense.weight", 12) == 13
    tok = CharTokenizer.build(TEXTS)
    feat = BertFeaturizer.from_scratch(tok, **{**TINY, "layers": 3}, freeze=False)
    groups = feat.layer_parameters()
    assert [d for d, _ in groups] == [0, 1, 2, 3]
    flat = [id(p) for _, ps in groups for p in ps]
    assert sorted(flat) == sorted(id(p) for p in feat.parameters()) and len(set(flat)) == len(flat)
    assert tiny_bert().layer_parameters() == []  # frozen: nothing to train


def test_hub_ids_are_refused_never_fetched():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        BertFeaturizer.load("bert-base-chinese")


# -- masked LM ---------------------------------------------------------------------------------


def test_masking_picks_only_maskable_positions_in_80_10_10_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (64, 100))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :2] = False
    out, labels = mask_tokens(ids, maskable, 0.15, 4, torch.arange(10, 100), g)
    chosen = labels != IGNORE
    assert not chosen[:, :2].any()
    assert abs(chosen.float().mean().item() - 0.15 * 98 / 100) < 0.01
    torch.testing.assert_close(labels[chosen], ids[chosen])
    assert (out[~chosen] == ids[~chosen]).all()
    n = chosen.sum().item()
    as_mask = (out[chosen] == 4).sum().item() / n
    kept = (out[chosen] == ids[chosen]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.03
    assert 0.08 < kept < 0.14  # 10% kept + random picks that hit the same id


def test_every_row_with_something_maskable_gets_a_label():
    g = torch.Generator().manual_seed(1)
    ids = torch.full((50, 3), 7)
    maskable = torch.tensor([[False, True, False]]).repeat(50, 1)
    _, labels = mask_tokens(ids, maskable, 0.01, 4, torch.tensor([7, 8]), g)
    assert ((labels != IGNORE).sum(1) == 1).all()
    assert (labels[:, 1] == 7).all()


def mlm_cfg(**kw) -> BertConfig:
    base = dict(hidden_size=32, layers=1, heads=2, intermediate_size=64, max_position=24, window=22, stride=11,
                pretrain_epochs=20, pretrain_batch_size=8, pretrain_lr=3e-3, pretrain_max_sentences=None)
    base.update(kw)
    return BertConfig(**base)


CORPUS = ["患者头痛三天入院", "否认高血压病史", "查体血压正常", "腹部CT示肝脏占位"] * 10


def test_mlm_loss_falls_and_the_checkpoint_continues_from_where_it_stopped(tmp_path):
    m1 = pretrain_bert_mlm(CORPUS, mlm_cfg(), tmp_path / "a", seed=0)
    assert m1["mlm_loss_after"] < m1["mlm_loss_before"] - 1.0
    assert m1["sentences_train"] + m1["sentences_heldout"] == len(CORPUS)
    feat = BertFeaturizer.load(tmp_path / "a")
    assert feat.dim == 32 and (feat.window, feat.stride) == (22, 11)
    assert feat(["患者头痛"]).shape == (1, 4, 32)
    m2 = pretrain_bert_mlm(CORPUS, mlm_cfg(pretrain_epochs=1), tmp_path / "b", seed=0, init_checkpoint=tmp_path / "a")
    # same held-out pieces and masking: the continued run starts at the first run's final loss
    assert m2["mlm_loss_before"] == pytest.approx(m1["mlm_loss_after"], rel=1e-4)
    vocab_a, vocab_b = ((tmp_path / d / "vocab.txt").read_text(encoding="utf-8") for d in "ab")
    assert vocab_b == vocab_a


def test_config_builder_gives_the_architecture():
    assert bert_model_args(BertConfig()) == {"hidden_size": 128, "layers": 2, "heads": 2,
                                             "intermediate_size": 256, "max_position": 256}


def test_mlm_pretraining_shows_a_bar_per_epoch_on_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CEMR_QUIET", raising=False)
    monkeypatch.setenv("CEMR_PROGRESS", "1")  # bars as on a terminal
    pretrain_bert_mlm(CORPUS[:12], mlm_cfg(pretrain_epochs=1, pretrain_batch_size=4), tmp_path / "m", seed=0)
    captured = capsys.readouterr()
    assert "bert mlm epoch 1/1" in captured.err and "0/3" in captured.err  # 11 train pieces, batches of 4
    assert "bert mlm held-out" in captured.err and captured.out == ""
