"""Corpus I/O: every input format read into one ``Document``/``Span`` model, with accounting.

>>> from cemr.corpus import read_documents, ReadReport
>>> report = ReadReport()
>>> docs = read_documents("ccks2017", "../shared/data/ccks2017", report=report)  # doctest: +SKIP
"""
from .document import CorpusError, Document, Issue, ReadReport, Span
from .encoding import detect_encoding
from .readers import FORMATS, read_documents, read_unlabeled
from .stats import corpus_stats
from .validate import POLICIES
from .writers import write_brat, write_jsonl

__all__ = [
    "CorpusError", "Document", "Issue", "ReadReport", "Span", "FORMATS", "POLICIES",
    "read_documents", "read_unlabeled", "write_jsonl", "write_brat", "corpus_stats",
    "detect_encoding",
]
