"""tirl.datasets.publish: staging, output sets, journals rolled forward, leftovers swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tirl.datasets.atomic import atomic_dir, atomic_file
from tirl.datasets.publish import OutputSet, recover, settle, sweep


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_lone_save_is_published_at_once(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert not target.exists() and tmp.name.startswith(".a.txt.tmp-")
    assert target.read_text() == "new" and _names(tmp_path) == ["a.txt"]


def test_an_open_set_publishes_at_commit_only(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    output_set = OutputSet([a, b]).open()
    for target in (a, b):
        with atomic_file(target) as tmp:
            tmp.write_text("new " + target.stem)
    assert (a.read_text(), b.read_text()) == ("old a", "old b")  # staged, not published
    output_set.commit()
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert _names(tmp_path) == ["a.txt", "b.txt"]  # no journal, no staging left


def test_an_aborted_set_leaves_the_old_files(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("old")
    output_set = OutputSet([a, tmp_path / "m"]).open()
    with atomic_file(a) as tmp:
        tmp.write_text("new")
    with atomic_dir(tmp_path / "m") as tmp:
        (tmp / "config.json").write_text("{}")
    output_set.abort()
    assert a.read_text() == "old" and _names(tmp_path) == ["a.txt"]
    with atomic_file(a) as tmp:  # closed: the next save publishes at once
        tmp.write_text("newer")
    assert a.read_text() == "newer"


def test_a_target_joins_one_open_set_only(tmp_path):
    first = OutputSet([tmp_path / "a"]).open()
    with pytest.raises(RuntimeError, match="already an output of an open set"):
        OutputSet([tmp_path / "a", tmp_path / "b"]).open()
    first.abort()


def test_a_directory_replaces_the_old_one(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "old.bin").write_text("old")
    with atomic_dir(model) as tmp:
        (tmp / "new.bin").write_text("new")
    assert _names(model) == ["new.bin"] and _names(tmp_path) == ["m"]


def _journal(directory: Path, pid: int, entries: list[tuple[str, str, str]]) -> Path:
    path = directory / f".publish-{pid}-0123abcd.json"
    path.write_text(json.dumps({"entries": [{"target": t, "staged": s, "old": o}
                                            for t, s, o in entries]}))
    return path


def test_recover_rolls_a_journalled_set_forward(tmp_path):
    # A writer killed after its journal: q.parquet already renamed, c.parquet and the model
    # directory (moved aside, not yet replaced) still staged.
    pid = _dead_pid()
    (tmp_path / "q.parquet").write_text("new q")
    (tmp_path / "c.parquet").write_text("old c")
    (tmp_path / f".c.parquet.tmp-{pid}-00000001").write_text("new c")
    (tmp_path / f".m.old-{pid}-00000003").mkdir()
    (tmp_path / f".m.old-{pid}-00000003" / "w").write_text("old m")
    (tmp_path / f".m.tmp-{pid}-00000002").mkdir()
    (tmp_path / f".m.tmp-{pid}-00000002" / "w").write_text("new m")
    _journal(tmp_path, pid, [("q.parquet", f".q.parquet.tmp-{pid}-00000000", ".q.old"),
                             ("c.parquet", f".c.parquet.tmp-{pid}-00000001", ".c.old"),
                             ("m", f".m.tmp-{pid}-00000002", f".m.old-{pid}-00000003")])
    recover(tmp_path)
    assert _names(tmp_path) == ["c.parquet", "m", "q.parquet"]
    assert [(tmp_path / n).read_text() for n in ("q.parquet", "c.parquet")] == ["new q", "new c"]
    assert (tmp_path / "m" / "w").read_text() == "new m"


def test_recover_leaves_a_set_that_a_live_writer_still_publishes(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    journal = _journal(tmp_path, os.getpid(), [("a", ".a.tmp-1-00000000", ".a.old")])
    (tmp_path / ".a.tmp-1-00000000").write_text("new")
    fd = os.open(journal, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        recover(tmp_path)
        assert journal.exists() and not (tmp_path / "a").exists()
    finally:
        os.close(fd)
    recover(tmp_path)
    assert (tmp_path / "a").read_text() == "new" and not journal.exists()


def test_sweep_removes_what_ended_processes_left_only(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    for name in (f".a.tmp-{dead}-00000000", f".a.tmp-{alive}-00000001", ".a.tmp-0badc0de",
                 f".b.tmp-{dead}-00000002", "a", ".gitkeep"):
        (tmp_path / name).write_text("x")
    (tmp_path / f".m.old-{dead}-00000003").mkdir()  # a full model copy of a killed swap
    sweep(tmp_path, "a")  # one target's leftovers (a save of ``a``)
    assert _names(tmp_path) == sorted([f".a.tmp-{alive}-00000001", f".b.tmp-{dead}-00000002",
                                       f".m.old-{dead}-00000003", "a", ".gitkeep"])
    sweep(tmp_path)  # the whole directory (a pipeline start)
    assert _names(tmp_path) == sorted([f".a.tmp-{alive}-00000001", "a", ".gitkeep"])


def test_the_next_save_settles_its_directory(tmp_path):
    pid = _dead_pid()
    (tmp_path / f".t.csv.tmp-{pid}-00000000").write_text("half")
    with atomic_file(tmp_path / "t.csv") as tmp:
        tmp.write_text("whole")
    assert _names(tmp_path) == ["t.csv"]
    settle(tmp_path / "t.csv")  # idempotent
    assert _names(tmp_path) == ["t.csv"]
