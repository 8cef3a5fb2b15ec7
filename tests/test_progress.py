"""Progress bars and log lines go to stderr, only to a terminal and never under quiet; results on stdout
are untouched."""
import io
import sys

from cemr import progress as P


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def use_tty(monkeypatch):
    """sys.stderr replaced by a fake terminal, not quiet. Called in the test body: pytest's own capture
    sets sys.stderr again between fixture setup and the test call."""
    monkeypatch.delenv(P.QUIET_ENV, raising=False)
    monkeypatch.delenv(P.PROGRESS_ENV, raising=False)
    monkeypatch.setattr(P, "_quiet", False)
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_a_terminal_shows_the_bar_and_lines_do_not_break_it(monkeypatch):
    tty = use_tty(monkeypatch)
    seen = []
    for i in P.progress(range(3), desc="epoch 1/2", unit="batch"):
        seen.append(i)
        P.say(f"line {i}")
    assert seen == [0, 1, 2]
    out = tty.getvalue()
    assert "epoch 1/2" in out and "batch" in out and "0/3" in out
    for i in range(3):  # each line printed whole, on its own line (the bar cleared around it)
        assert f"\rline {i}\n" in out
    bar = P.progress(total=10, desc="by hand", unit="char", unit_scale=True)
    bar.update(4)
    bar.set_postfix(loss="0.5")
    bar.close()
    assert "by hand" in tty.getvalue()


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv(P.QUIET_ENV, raising=False)
    monkeypatch.delenv(P.PROGRESS_ENV, raising=False)
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert not P.enabled()
    bar = P.progress(range(4), desc="quiet bar")
    assert list(bar) == [0, 1, 2, 3]  # a disabled bar still iterates
    with P.progress(total=3, desc="by hand") as b:
        b.update(2)
        b.set_postfix(x=1)
    assert plain.getvalue() == ""
    P.say("a log line")  # lines still print when stderr is a file
    assert plain.getvalue() == "a log line\n"
    monkeypatch.setenv(P.PROGRESS_ENV, "1")  # asked for: bars in a log file too
    list(P.progress(range(2), desc="forced"))
    assert "forced" in plain.getvalue()


def test_quiet_silences_bars_and_lines_but_not_warnings(monkeypatch):
    tty = use_tty(monkeypatch)
    previous = P.set_quiet(True)
    try:
        assert previous is False and P.quiet() and not P.enabled()
        list(P.progress(range(3), desc="hidden"))
        P.say("informational")
        P.say("warning: something to know")
    finally:
        P.set_quiet(previous)
    assert tty.getvalue() == "warning: something to know\n"
    assert not P.quiet() and P.enabled()
    monkeypatch.setenv(P.QUIET_ENV, "1")
    monkeypatch.setenv(P.PROGRESS_ENV, "1")  # quiet wins
    assert P.quiet() and not P.enabled()
    P.say("also hidden")
    list(P.progress(range(2), desc="hidden too"))
    assert tty.getvalue() == "warning: something to know\n"
    monkeypatch.setenv(P.QUIET_ENV, "0")
    assert not P.quiet()


def test_stdout_gets_results_only_and_write_flushes(monkeypatch):
    tty = use_tty(monkeypatch)
    out = io.StringIO()
    flushed = []
    monkeypatch.setattr(out, "flush", lambda: flushed.append(out.getvalue()))
    for i in P.progress(range(2), desc="predict"):
        P.write(f'{{"id": {i}}}\n', out)
    assert out.getvalue() == '{"id": 0}\n{"id": 1}\n'  # no bar text on the result stream
    assert flushed == ['{"id": 0}\n', '{"id": 0}\n{"id": 1}\n']  # each line flushed as written
    assert "predict" in tty.getvalue()


def test_a_stream_without_isatty_counts_as_no_terminal():
    class Bare:
        def write(self, s):
            raise AssertionError("nothing is drawn")

        def flush(self):
            pass

    assert not P.enabled(Bare())
    assert list(P.progress([1, 2], desc="x", file=Bare())) == [1, 2]
