"""cemr.lexicon.builder: a lexicon from a config's lists, stop words and training mentions."""
import pytest

from cemr.config import LexiconConfig, LexiconSource
from cemr.corpus.document import Document, Span
from cemr.lexicon import build_lexicon


def test_build_lexicon_from_config_sources_stopwords_and_mentions(write):
    p = write("s.txt", "头痛\n检查\n发热\n")
    cfg = LexiconConfig(sources=[LexiconSource(p, "lines", "症状")], stopwords=["检查"], min_length=2)
    docs = [Document("d", "发热伴咳嗽", [Span(0, 2, "体征"), Span(3, 5, "症状")])]
    lex = build_lexicon(cfg, docs)
    assert dict(lex.items()) == {"头痛": "症状", "发热": "体征", "咳嗽": "症状"}  # 1:1 tie -> alphabetical
    cfg.include_train_mentions = False
    assert dict(build_lexicon(cfg, docs).items()) == {"头痛": "症状", "发热": "症状"}


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown lexicon preset 'nope'"):
        build_lexicon(LexiconConfig(preset="nope"))
