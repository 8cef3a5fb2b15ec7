"""The one early-stopping rule, for epochs (:func:`cemr.training.train_tagger`, the Ray Train
loop's :class:`cluster.train.EpochBook`) and for self-training rounds (:func:`cemr.selftrain.should_stop`).

A step (an epoch, a round) *improves* when its score exceeds the best so far by more than
``min_delta`` (0: strictly higher); a step without a score (no dev set) always counts as the best
and never stops the run early. The run is *exhausted* once ``patience`` steps have passed since the
best one (``patience <= 0``: never). Steps are numbered by the caller and must increase.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Patience:
    """Best score so far, the step that reached it and how long ago that was (see module doc)."""

    patience: int
    min_delta: float = 0.0
    best: float = -1.0
    best_step: int = 0
    last_step: int | None = None
    scored: bool = False

    @classmethod
    def restored(cls, patience: int, steps_done: int, best: float, best_step: int, scored: bool) -> "Patience":
        """The rule as it stood after ``steps_done`` steps numbered 1.. (0: none yet), the best
        ``best`` at ``best_step``; ``scored``: the steps had scores (a dev set)."""
        return cls(patience, best=best, best_step=best_step, last_step=steps_done or None,
                   scored=scored and steps_done > 0)

    def update(self, step: int, score: float | None) -> bool:
        """Record step ``step`` with ``score`` (``None``: unscored); returns whether it improved."""
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"step {step} recorded after step {self.last_step}")
        self.last_step = step
        if score is None:
            improved = True
            self.best = max(self.best, 0.0)
        else:
            improved = score > self.best + self.min_delta
            if improved:
                self.best = float(score)
            self.scored = True
        if improved:
            self.best_step = step
        return improved

    @property
    def waited(self) -> int:
        """Steps since the best one."""
        return 0 if self.last_step is None else self.last_step - self.best_step

    @property
    def exhausted(self) -> bool:
        """``patience`` scored steps have passed without an improvement."""
        return self.scored and self.patience > 0 and self.waited >= self.patience
