"""Logs that read well in a file (issue 16): progress as lines off a terminal, plain log
records instead of Rich's 80-column wrapping, and a closing summary naming the results."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from kedro.logging import RichHandler
from rich.console import Console

from tirl.core.progress import LineProgress, progress
from tirl.run_log import plain_console_logging, result_paths, summary_lines


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_line_report_off_a_terminal_and_tqdm_on_one():
    assert isinstance(progress(total=5, desc="x", stream=io.StringIO()), LineProgress)
    bar = progress(total=5, desc="x", stream=_Tty())
    assert type(bar).__module__.startswith("tqdm")
    bar.close()


def test_line_progress_logs_a_tenth_at_a_time_and_the_end(caplog):
    caplog.set_level(logging.INFO, logger="tirl.progress")
    bar = LineProgress(total=95, desc="rollout", unit="traj")
    for _ in range(95):
        bar.update(1)
    bar.set_postfix({"R": "0.500"})
    bar.close()
    bar.close()  # a second close says nothing more
    lines = [r.getMessage() for r in caplog.records]
    assert 9 <= len(lines) <= 11
    assert lines[-1].startswith("rollout: 95/95 traj (100%)") and lines[-1].endswith("R=0.500")
    assert all("\r" not in line for line in lines)


def test_line_progress_from_a_resumed_step_and_disabled(caplog):
    caplog.set_level(logging.INFO, logger="tirl.progress")
    LineProgress(total=10, desc="rl", initial=10).close()  # nothing happened: no line
    off = LineProgress(total=10, desc="rl", disable=True)
    for _ in range(10):
        off.update()
    off.close()
    assert caplog.records == []


def test_rich_handlers_off_a_terminal_become_plain_one_line_records():
    root = logging.Logger("scratch")
    file_like, tty = io.StringIO(), _Tty()
    # Each its own console: by default every Rich handler shares rich's global one.
    off, on = RichHandler(console=Console(file=file_like)), RichHandler(console=Console(file=tty))
    off.setLevel(logging.WARNING)
    root.addHandler(off)
    root.addHandler(on)
    assert plain_console_logging(root) == 1
    kinds = sorted(type(h).__name__ for h in root.handlers)
    assert kinds == ["RichHandler", "StreamHandler"]
    plain = next(h for h in root.handlers if type(h) is logging.StreamHandler)
    assert plain.stream is file_like and plain.level == logging.WARNING
    name = "vspo_prs.seed0.a_dataset_name_far_longer_than_eighty_columns_" + "x" * 60
    root.warning("Saving data to %s", name)
    out = file_like.getvalue()
    assert out.count("\n") == 1 and name in out


def test_the_summary_lists_reports_first_then_models_and_the_mlflow_run(tmp_path: Path):
    targets = [tmp_path / "data/06_models/rl/vspo_prs/seed0",
               tmp_path / "data/08_reporting/vspo_prs/ablation.md",
               tmp_path / "data/08_reporting/vspo_prs/comparison.md",
               Path("data/07_model_output/evaluation/vspo_prs/seed0/rows.csv"),
               tmp_path / "elsewhere/x.json"]
    paths = result_paths(targets, tmp_path)
    assert paths == ["data/08_reporting/vspo_prs/comparison.md",
                     "data/08_reporting/vspo_prs/ablation.md",
                     "data/06_models/rl/vspo_prs/seed0",
                     "data/07_model_output/evaluation/vspo_prs/seed0/rows.csv"]
    lines = summary_lines(paths, "abc123", "sqlite:///mlflow.db", max_paths=2)
    assert lines[1].strip() == "data/08_reporting/vspo_prs/comparison.md"
    assert "2 more" in lines[3]
    assert "abc123" in lines[-1] and "mlflow ui --backend-store-uri sqlite:///mlflow.db" in lines[-1]


@pytest.mark.parametrize("run_id", [None])
def test_the_summary_without_files_or_a_run_says_so(run_id):
    lines = summary_lines([], run_id, None)
    assert lines == ["Run finished. Results:", "  (no files under data/)"]
