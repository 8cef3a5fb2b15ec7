"""Corpus I/O: every input format read into one ``Document``/``Span`` model, with accounting.

>>> from cemr.corpus import read_documents, ReadReport
>>> report = ReadReport()
>>> docs = read_documents("ccks2017", "../shared/data/ccks2017", report=report)  # doctest: +SKIP
"""
from .detect import AUTO, LABELED_FORMATS, Detection, detect_format, resolve_format
from .document import CorpusError, Document, Issue, ReadReport, Span
from .encoding import detect_encoding
from .policy import check_rejections
from .readers import FORMATS, INPUT_FORMATS, read_documents, read_unlabeled
from .stats import corpus_stats
from .validate import POLICIES
from .writers import write_brat, write_jsonl

__all__ = [
    "CorpusError", "Document", "Issue", "ReadReport", "Span", "FORMATS", "INPUT_FORMATS",
    "LABELED_FORMATS", "AUTO", "POLICIES", "Detection", "detect_format", "resolve_format",
    "check_rejections", "read_documents", "read_unlabeled", "write_jsonl", "write_brat",
    "corpus_stats", "detect_encoding",
]
