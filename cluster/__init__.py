"""The Ray side of cemr: runtime (join/start Ray, resource sizing), pseudo-labeling on actors kept
across rounds, Ray Train rounds and Ray Data batch prediction. ``cemr/`` never imports this package; this package imports ``cemr``.
"""
