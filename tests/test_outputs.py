"""cemr.outputs: atomic files and directories, the output-vs-input check."""
import pytest

from cemr.outputs import OutputError, atomic_dir, atomic_open, atomic_write_text, check_output


def test_atomic_open_replaces_only_on_success(tmp_path):
    target = tmp_path / "a" / "out.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("half")
            raise RuntimeError("stop")
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    with atomic_open(target, "wb", encoding=None) as fh:
        fh.write(b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(target, "a"):
            pass


def test_atomic_dir_is_complete_or_absent(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "x").write_text("1")
            raise RuntimeError("stop")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as d:
        (d / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as d:
        (d / "y").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_output(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("x")
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(src, [src], overwrite=True)
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path / "sub" / ".." / "in.txt", [str(src)])
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path / "out", [tmp_path], kind="dir")  # inside an input directory
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output(tmp_path, [src], kind="dir", overwrite=True)  # a directory holding an input
    with pytest.raises(OutputError, match="already exists"):
        check_output(src, [])
    check_output(src, [], overwrite=True)
    check_output(tmp_path / "new.txt", [src])
    check_output("-", ["-"])
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path, [], overwrite=True)
    with pytest.raises(OutputError, match="is a file"):
        check_output(src, [], kind="dir", overwrite=True)
