"""cemr: self-training NER for Chinese electronic medical records (BiLM_BNER).

The library is pure Python + torch and never imports ray; the Ray side lives in ``cluster/``.
"""

__version__ = "0.1.0"
