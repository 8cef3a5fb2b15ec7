import pytest
import torch

from cemr.config import BiLMConfig
from cemr.batching import length_batches
from cemr.features.bilm import (
    BOS_ID,
    EOS_ID,
    IGNORE,
    PAD_ID,
    UNK_ID,
    BiLMFeaturizer,
    CharLM,
    CharVocab,
    chunk_text,
    lm_batch,
    pad_ids,
    reverse_padded,
    split_heldout,
    train_bilm,
)
from cemr.features.word2vec import CharVectors

TEXTS = ["患者头痛三天", "否认高血压病史", "查体：血压正常", "腹部CT示肝脏占位"]


def tiny_featurizer(hidden: int = 8, seed: int = 0) -> BiLMFeaturizer:
    torch.manual_seed(seed)
    vocab = CharVocab.build(TEXTS)
    return BiLMFeaturizer(vocab, CharLM(len(vocab), 8, hidden), CharLM(len(vocab), 8, hidden))


def tiny_cfg(**kw) -> BiLMConfig:
    base = dict(embedding_dim=16, hidden_dim=16, layers=1, dropout=0.1, epochs=8, batch_size=8, lr=1e-2, max_len=32)
    base.update(kw)
    return BiLMConfig(**base)


# -- pure pieces -------------------------------------------------------------------------------


def test_vocab_puts_specials_first_and_maps_unknown_chars_to_unk():
    vocab = CharVocab.build(["abca"])
    assert vocab.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert vocab.tokens[4] == "a"  # most frequent first
    assert vocab.encode("az") == [4, UNK_ID]
    assert CharVocab.from_json(vocab.to_json()).tokens == vocab.tokens


def test_reverse_padded_reverses_within_each_length_only():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 0])
    assert reverse_padded(x, lengths).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [0, 0, 0, 0]]
    feats = torch.randn(3, 4, 5)
    torch.testing.assert_close(reverse_padded(reverse_padded(feats, lengths), lengths), feats)
    torch.testing.assert_close(reverse_padded(feats, lengths)[0, 0], feats[0, 2])


def test_lm_batch_shifts_targets_and_ignores_padding():
    inputs, targets = lm_batch([[7, 8, 9], [5]])
    assert inputs.tolist() == [[BOS_ID, 7, 8, 9], [BOS_ID, 5, PAD_ID, PAD_ID]]
    assert targets.tolist() == [[7, 8, 9, EOS_ID], [5, EOS_ID, IGNORE, IGNORE]]
    inputs, targets = lm_batch([[7, 8, 9]], reverse=True)
    assert inputs.tolist() == [[BOS_ID, 9, 8, 7]]
    assert targets.tolist() == [[9, 8, 7, EOS_ID]]


def test_chunks_keep_every_char_and_batches_group_similar_lengths():
    assert chunk_text("abcdefg", 3) == ["abc", "def", "g"]
    assert chunk_text("", 3) == []
    batches = length_batches([5, 1, 4, 2, 3], 2)  # cemr.batching: longest first without a generator
    assert batches == [[0, 2], [4, 3], [1]]
    ids, lengths = pad_ids([[3], []])
    assert ids.shape == (2, 1) and lengths.tolist() == [1, 0]


def test_heldout_split_is_seeded_and_disjoint():
    items = list(range(20))
    train, held = split_heldout(items, 0.1, seed=3)
    assert len(held) == 2 and sorted(train + held) == items
    assert split_heldout(items, 0.1, seed=3) == (train, held)
    with pytest.raises(ValueError, match="at least 2"):
        split_heldout([1], 0.1, 0)


# -- the featurizer ----------------------------------------------------------------------------


def test_output_is_one_2h_vector_per_char_zero_after_each_text():
    feat = tiny_featurizer(hidden=8)
    assert feat.dim == 16
    out = feat(["患者", "否认高血压病史", ""])
    assert out.shape == (3, 7, 16)
    assert out[0, 2:].abs().sum() == 0
    assert out[2].abs().sum() == 0
    assert out[0, :2].abs().sum() > 0
    assert feat([]).shape == (0, 0, 16)


def test_forward_state_reads_only_the_past_and_backward_state_only_the_future():
    feat = tiny_featurizer(hidden=8)
    H = 8
    base = feat(["患者头痛三天"])[0]  # (6, 2H)
    later_changed = feat(["患者头否认高"])[0]  # chars 3.. differ
    earlier_changed = feat(["否认高痛三天"])[0]  # chars ..2 differ
    # h_f at t <= 2 only read chars 0..t: unchanged when later chars change; changes from t = 3 on
    torch.testing.assert_close(base[:3, :H], later_changed[:3, :H])
    for t in range(3, 6):  # h_f at t has read char t itself
        assert not torch.allclose(base[t, :H], later_changed[t, :H])
    # h_b at t >= 3 only read chars t..end: unchanged when earlier chars change
    torch.testing.assert_close(base[3:, H:], earlier_changed[3:, H:])
    for t in range(3):  # h_b at t has read char t itself
        assert not torch.allclose(base[t, H:], earlier_changed[t, H:])
    # and each direction does see its own side: h_b at t <= 2 changes with later chars
    assert not torch.allclose(base[:3, H:], later_changed[:3, H:])


def test_padding_and_batch_neighbours_do_not_leak_into_a_text():
    feat = tiny_featurizer()
    alone = feat(["患者"])[0]
    batched = feat(["患者", "腹部CT示肝脏占位"])[0, :2]
    torch.testing.assert_close(alone, batched)


def test_bfloat16_weights_run_and_stay_close_to_float32():
    # cemr.predictor.set_precision("bf16") casts a featurizer's weights; its forward must follow
    feat = tiny_featurizer()
    texts = ["患者头痛三天", "查体"]
    ref = feat(texts)
    feat.to(torch.bfloat16)
    low = feat(texts)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    assert not torch.equal(low.float(), ref)
    assert (low[1, 2:] == 0).all()  # padding still zero


def test_frozen_by_default_and_stays_in_eval_mode():
    feat = tiny_featurizer()
    assert not any(p.requires_grad for p in feat.parameters())
    parent = torch.nn.Sequential(feat)
    parent.train()
    assert not feat.training
    feat.forward_lm.dropout.p = 0.5
    torch.testing.assert_close(feat(["患者头痛"]), feat(["患者头痛"]))


def test_save_and_load_give_identical_outputs(tmp_path):
    feat = tiny_featurizer()
    feat.save(tmp_path / "bilm")
    back = BiLMFeaturizer.load(tmp_path / "bilm")
    texts = ["患者头痛三天", "查体"]
    torch.testing.assert_close(back(texts), feat(texts), rtol=0, atol=0)
    assert back.vocab.tokens == feat.vocab.tokens
    assert not any(p.requires_grad for p in back.parameters())


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="bilm_config.json"):
        BiLMFeaturizer.load(tmp_path)


# -- training ----------------------------------------------------------------------------------


def test_perplexity_falls_on_a_tiny_repetitive_corpus():
    texts = ["患者头痛三天入院", "否认高血压病史", "查体血压正常"] * 12
    feat, m = train_bilm(texts, None, tiny_cfg(), seed=0)
    for d in ("f", "b"):
        assert m[f"heldout_ppl_{d}"] < m[f"heldout_ppl_{d}_initial"] / 3
        assert m[f"train_ppl_{d}"] < m[f"heldout_ppl_{d}_initial"] / 3
    assert m["sentences_train"] + m["sentences_heldout"] == len(texts)
    assert feat.dim == 32
    assert not any(p.requires_grad for p in feat.parameters())
    assert feat(texts[:2]).shape == (2, 8, 32)


def test_embeddings_start_from_word2vec_when_dims_agree():
    texts = ["患者头痛", "查体正常"] * 3
    chars = sorted(set("".join(texts)))
    vectors = CharVectors(chars, torch.randn(len(chars), 16).numpy())
    feat, m = train_bilm(texts, vectors, tiny_cfg(epochs=0), seed=0)
    assert m["embedding_init_rows"] == len(chars)
    row = feat.vocab.tokens.index("患")
    expected = torch.from_numpy(vectors.vectors[chars.index("患")])
    torch.testing.assert_close(feat.forward_lm.embedding.weight[row], expected)
    feat2, m2 = train_bilm(texts, vectors, tiny_cfg(epochs=0, embedding_dim=8), seed=0)
    assert m2["embedding_init_rows"] == 0


def test_long_texts_are_cut_to_max_len_and_sentences_capped():
    texts = ["患者头痛三天入院" * 10] * 3  # 80 chars each
    _, m = train_bilm(texts, None, tiny_cfg(epochs=1, max_len=32, max_sentences=5), seed=0)
    assert m["sentences_available"] == 9
    assert m["sentences_train"] + m["sentences_heldout"] == 5


def test_training_shows_a_bar_per_epoch_on_stderr_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("CEMR_QUIET", raising=False)
    monkeypatch.delenv("CEMR_PROGRESS", raising=False)
    train_bilm(TEXTS, None, tiny_cfg(epochs=1, batch_size=2), seed=0)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no bar
    monkeypatch.setenv("CEMR_PROGRESS", "1")  # bars as on a terminal
    train_bilm(TEXTS, None, tiny_cfg(epochs=1, batch_size=2), seed=0)
    captured = capsys.readouterr()
    assert "bilm epoch 1/1" in captured.err and "0/2 " in captured.err  # 3 train pieces, batches of 2
    assert "bilm perplexity" in captured.err and captured.out == ""
