"""Entry points of the Ray side: ``python -m jobs.<name> [--config YAML] [--resume] [key=value ...]``.

``bootstrap`` (self-training rounds), ``sweep`` (threshold sweep), ``train`` (supervised round 0),
``pretrain`` (prepare + pretrain), ``predict`` (batch inference with Ray Data), ``evaluate``.
Each runs locally (joining or starting Ray) and under ``ray job submit --working-dir . -- python -m
jobs.<name> ...``. The last line each prints is a JSON summary. Thin: the work lives in ``cluster/``
and ``cemr/``.
"""
