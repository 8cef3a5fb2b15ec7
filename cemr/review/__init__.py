"""The review loop: the sentences the model is least sure of go to annotators, their corrections
come back as gold for the next round.

- :mod:`cemr.review.select`: the below-threshold rows of a self-training round (or a ``cemr
  predict`` output), ranked by uncertainty and deduplicated, with the model's predictions;
- :mod:`cemr.review.export`: those as Label Studio tasks (``predictions`` = pre-annotations),
  doccano JSON lines or a BRAT directory;
- :mod:`cemr.review.imports`: the reviewed annotations (Label Studio JSON export, doccano JSON
  lines, BRAT) read back with the accounting of every reader, written as cemr JSON lines with
  their provenance in ``meta["review"]``;
- :mod:`cemr.review.html`: the self-contained HTML view of tagged documents.
"""
