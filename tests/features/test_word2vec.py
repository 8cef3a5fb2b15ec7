import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from cemr.config import Word2VecConfig
from cemr.features.word2vec import (
    CharSentences,
    CharVectors,
    init_embedding_from_vectors,
    train_char_word2vec,
    word2vec_args,
)

TEXTS = ["患者头痛三天", "患者发热两天", "查体血压正常", "头痛伴恶心呕吐"] * 5


def test_vectors_cover_every_char_and_have_the_asked_shape():
    cv = train_char_word2vec(TEXTS, dim=8, window=2, min_count=1, epochs=2, seed=1)
    assert set(cv.chars) == set("".join(TEXTS))
    assert cv.vectors.shape == (len(cv.chars), 8)
    assert cv.vectors.dtype == np.float32
    assert cv.dim == 8


def test_same_seed_same_vectors_and_other_seed_other_vectors():
    a = train_char_word2vec(TEXTS, dim=8, epochs=2, seed=3)
    b = train_char_word2vec(TEXTS, dim=8, epochs=2, seed=3)
    c = train_char_word2vec(TEXTS, dim=8, epochs=2, seed=4)
    assert a.chars == b.chars
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.allclose(a.vectors, c.vectors)


def test_min_count_leaves_rare_chars_out():
    cv = train_char_word2vec(TEXTS + ["罕"], dim=8, min_count=2, epochs=1)
    assert "罕" not in cv.chars
    assert "患" in cv.chars


def test_chars_sharing_contexts_end_up_closer_than_unrelated_ones():
    # 甲 and 乙 occur between the same neighbours; 丙 between others; filler around all of them.
    rng = random.Random(0)
    near_a, near_c, filler = "左右前后里外", "上下东西南北", "一二三四五六七八九十"

    def pad() -> str:
        return "".join(rng.choice(filler) for _ in range(3))

    texts = []
    for _ in range(400):
        texts.append(pad() + rng.choice(near_a) + rng.choice("甲乙") + rng.choice(near_a) + pad())
        texts.append(pad() + rng.choice(near_c) + "丙" + rng.choice(near_c) + pad())
    cv = train_char_word2vec(texts, dim=16, window=1, epochs=20, sg=True, seed=0)
    idx = cv.index()
    v = cv.vectors / np.linalg.norm(cv.vectors, axis=1, keepdims=True)
    assert v[idx["甲"]] @ v[idx["乙"]] > v[idx["甲"]] @ v[idx["丙"]] + 0.2


def test_a_factory_is_streamed_once_per_pass():
    calls = []

    def factory():
        calls.append(1)
        return iter(TEXTS)

    cv = train_char_word2vec(factory, dim=8, epochs=3)
    assert len(cv.chars) > 0
    assert len(calls) >= 4  # vocab pass + one per epoch (plus an emptiness check)


def test_a_one_shot_generator_is_accepted():
    cv = train_char_word2vec((t for t in TEXTS), dim=8, epochs=2)
    assert set(cv.chars) == set("".join(TEXTS))


def test_sentences_are_restartable_and_long_texts_are_cut_not_dropped():
    text = "abcdefghij"
    sents = CharSentences([text, "", "xy"], max_len=4)
    first = list(sents)
    assert first == list(sents)
    assert first == [list("abcd"), list("efgh"), list("ij"), list("xy")]
    assert "".join("".join(s) for s in first) == text + "xy"


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="no characters"):
        train_char_word2vec(["", ""], dim=8)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    cv = train_char_word2vec(TEXTS, dim=8, epochs=1)
    cv.save(tmp_path / "w2v")
    back = CharVectors.load(tmp_path / "w2v")
    assert back.chars == cv.chars
    np.testing.assert_array_equal(back.vectors, cv.vectors)
    assert json.loads((tmp_path / "w2v" / "chars.json").read_text(encoding="utf-8")) == cv.chars
    np.load(tmp_path / "w2v" / "vectors.npy", allow_pickle=False)


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vectors.npy"):
        CharVectors.load(tmp_path)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="2 chars but 3"):
        CharVectors(["a", "b"], np.zeros((3, 4)))


def test_embedding_rows_are_copied_for_known_tokens_only():
    cv = CharVectors(["a", "b"], np.arange(8, dtype=np.float32).reshape(2, 4))
    emb = nn.Embedding(4, 4)
    before = emb.weight.detach().clone()
    n = init_embedding_from_vectors(emb, ["<pad>", "b", "z", "a"], cv)
    assert n == 2
    torch.testing.assert_close(emb.weight[1], torch.tensor([4.0, 5, 6, 7]))
    torch.testing.assert_close(emb.weight[3], torch.tensor([0.0, 1, 2, 3]))
    torch.testing.assert_close(emb.weight[0], before[0])
    torch.testing.assert_close(emb.weight[2], before[2])
    with pytest.raises(ValueError, match="dim"):
        init_embedding_from_vectors(nn.Embedding(4, 5), ["<pad>", "b", "z", "a"], cv)


def test_config_builder_gives_the_training_arguments():
    args = word2vec_args(Word2VecConfig(dim=12, window=3, min_count=2, epochs=4, sg=True))
    assert args == {"dim": 12, "window": 3, "min_count": 2, "epochs": 4, "sg": True}


def test_training_shows_a_bar_over_every_pass_on_stderr(capsys, monkeypatch):
    monkeypatch.delenv("CEMR_QUIET", raising=False)
    monkeypatch.setenv("CEMR_PROGRESS", "1")  # bars as on a terminal
    train_char_word2vec(TEXTS, dim=8, epochs=2, seed=1)
    captured = capsys.readouterr()
    assert "word2vec vocabulary" in captured.err
    assert "word2vec (2 epochs)" in captured.err and f"0/{2 * len(TEXTS)}" in captured.err
    assert captured.out == ""
