"""One reader module per input format; each exposes ``read(path, *, report, ...)``.

Use ``cemr.corpus.readers.read_documents`` rather than these modules directly.
"""
