"""cemr.lexicon.filters: the noise filter's rejection reasons."""
import pytest

from cemr.lexicon import TermFilter


@pytest.mark.parametrize(
    "raw, term, reason",
    [
        ("  头痛\r", "头痛", None),
        ("\ufeff胃癌", "胃癌", None),
        ("\u3000 ", "", "empty"),
        ("CA 19-9", "CA 19-9", "whitespace"),
        ("痛", "痛", "too_short"),
        ("很" * 31, "很" * 31, "too_long"),
        ("没有", "没有", "stopword"),
        ("12.5", "12.5", "digits_punct"),
        ("（）+", "（）+", "digits_punct"),
        ("CT", "CT", None),
        ("β2微球蛋白", "β2微球蛋白", None),
    ],
)
def test_term_filter_reasons(raw, term, reason):
    f = TermFilter(min_length=2, max_length=30, stopwords=frozenset({"没有"}))
    assert f.clean(raw) == (term, reason)


def test_term_filter_refuses_bad_lengths():
    with pytest.raises(ValueError, match="min_length"):
        TermFilter(min_length=3, max_length=2)
