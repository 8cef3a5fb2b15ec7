"""The one early-stopping rule (cemr.stopping.Patience) and its three users agree."""
import pytest

from cemr.stopping import Patience


def test_strict_improvement_resets_the_wait_and_ties_do_not():
    rule = Patience(2)
    assert rule.update(1, 0.5)
    assert not rule.update(2, 0.5)  # a tie is no gain
    assert not rule.exhausted and rule.waited == 1
    assert not rule.update(3, 0.4)
    assert rule.exhausted and (rule.best, rule.best_step) == (0.5, 1)


def test_min_delta_and_patience_zero():
    rule = Patience(1, min_delta=0.01)
    rule.update(0, 0.50)
    assert not rule.update(1, 0.505)  # within min_delta
    assert rule.exhausted
    never = Patience(0)
    for step, f1 in enumerate([0.9, 0.1, 0.1, 0.1]):
        never.update(step, f1)
    assert not never.exhausted


def test_unscored_steps_always_count_as_best_and_never_stop():
    rule = Patience(1)
    for step in range(1, 5):
        assert rule.update(step, None)
    assert not rule.exhausted and rule.best_step == 4 and rule.best == 0.0


def test_steps_must_increase():
    rule = Patience(1)
    rule.update(3, 0.1)
    with pytest.raises(ValueError, match="after step 3"):
        rule.update(3, 0.2)


def test_epochs_rounds_and_ray_book_take_the_same_decisions():
    from cemr.selftrain import RoundRecord, should_stop
    from cluster.train import EpochBook

    scores = [0.30, 0.41, 0.41, 0.39, 0.45, 0.44, 0.43]
    for patience in (0, 1, 2, 3):
        rule, book = Patience(patience), EpochBook(100, patience, True)
        history = []
        for i, f1 in enumerate(scores):
            rule.update(i + 1, f1)
            book.update({"epoch": i + 1, "dev_f1": f1})
            history.append(RoundRecord(round=i, dev_f1=f1))
            assert book.finished == rule.exhausted
            assert bool(should_stop(history, patience, max_rounds=100)) == rule.exhausted
            assert (book.best_dev_f1, book.best_epoch) == (rule.best, rule.best_step)
            if rule.exhausted:
                break


def test_a_restored_rule_continues_as_the_uninterrupted_one():
    scores = [0.3, 0.5, 0.4, 0.45, 0.2]
    whole = Patience(2)
    for i, f1 in enumerate(scores, 1):
        whole.update(i, f1)
    part = Patience(2)
    for i, f1 in enumerate(scores[:2], 1):
        part.update(i, f1)
    again = Patience.restored(2, 2, part.best, part.best_step, scored=True)
    for i, f1 in enumerate(scores[2:], 3):
        again.update(i, f1)
    assert (again.best, again.best_step, again.waited, again.exhausted) == \
        (whole.best, whole.best_step, whole.waited, whole.exhausted)
    fresh = Patience.restored(2, 0, -1.0, 0, scored=True)  # nothing done yet: step 1 may come
    assert fresh.update(1, 0.1) and not fresh.exhausted
