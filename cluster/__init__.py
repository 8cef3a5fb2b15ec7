"""The Ray side of cemr: runtime (join/start Ray, resource sizing) and the Ray Data
pseudo-labeling pipeline. ``cemr/`` never imports this package; this package imports ``cemr``.
"""
