"""Kill a save at its write points (kill_points.py); the outputs are then the old set or the
new set, byte for byte, once the next run (or the next read) has started.

Cases: data_prep's output set (five files of one node, through the Kedro runner, the real
catalog entries and the project's hooks), a model directory with its metrics in one node
(sft), a trajectory Parquet table, a JSON metrics file and a model directory on their own.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from kill_points import kill_points, run_forked, snapshot
from tirl.core.types import Trajectory
from tirl.datasets.trajectories import TrajectoryDataset
from tirl.pipelines.data_prep.pipeline import create_pipeline as data_prep_pipeline
from tirl.publish_hook import OutputSetHook

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def _entries(catalog_file: str, names: list[str], root: Path) -> dict[str, dict[str, Any]]:
    """Catalog entries of conf/base with their data/ paths moved under ``root``."""
    config = yaml.safe_load((CONF / catalog_file).read_text())

    def moved(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        for key in ("filepath", "path"):
            if key in cfg:
                cfg[key] = str(root / cfg[key])
        if isinstance(cfg.get("dataset"), dict):
            cfg["dataset"] = moved(cfg["dataset"])
        return cfg
    return {name: moved(config[name]) for name in names}


def _run(pipeline: Pipeline, entries: dict[str, dict], inputs: dict[str, Any]) -> None:
    """``pipeline`` as ``kedro run`` runs it: the catalog from ``entries``, the project's
    output-set hook, before_pipeline_run and then the runner."""
    catalog = DataCatalog.from_config(copy.deepcopy(entries))
    for name, value in inputs.items():
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    hooks = _create_hook_manager()
    hooks.register(OutputSetHook())
    hooks.hook.before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)
    SequentialRunner().run(pipeline, catalog, hooks)


def _next_start(pipeline: Pipeline, entries: dict[str, dict]) -> None:
    """What the next ``kedro run`` of ``pipeline`` does before its first node."""
    hooks = _create_hook_manager()
    hooks.register(OutputSetHook())
    hooks.hook.before_pipeline_run(run_params={}, pipeline=pipeline,
                                   catalog=DataCatalog.from_config(copy.deepcopy(entries)))


def _assert_old_or_new(write_new, settle, root: Path, old: dict, new: dict,
                       restore_old, *, both: bool = True) -> None:
    """Kill ``write_new`` at each of its write points over the old outputs; after
    ``settle`` the directory is exactly the old set or the new set (``both``: and some kill
    lands after the point of no return, so that the new set is rolled forward)."""
    seen = set()
    for k in kill_points(write_new):
        restore_old()
        code, _ = run_forked(write_new, kill_at=k)
        settle()
        state = snapshot(root)
        assert state in (old, new), (
            f"killed at write point {k} (status {code}): neither the old nor the new set; "
            f"differs in {sorted(set(state.items()) ^ set(old.items()))[:4]}")
        seen.add("old" if state == old else "new")
    assert seen == ({"old", "new"} if both else seen | {"old"}), seen


def _old_and_new(root: Path, write_old, write_new, saved: Path):
    """Write the new outputs, then (from nothing) the old ones: their snapshots, and a
    function that puts the old set back before each kill."""
    write_new()
    new = snapshot(root)
    shutil.rmtree(root)
    write_old()
    old = snapshot(root)
    shutil.copytree(root, saved)

    def restore_old() -> None:
        shutil.rmtree(root)
        shutil.copytree(saved, root)

    return old, new, restore_old


def _tables(tiny_tables, variant: int) -> dict[str, Any]:
    corpus, questions, gold = (t.copy() for t in tiny_tables)
    if variant:  # another world: other text, other answers
        corpus["text"] = corpus["text"] + " (world 1)"
        questions["answers"] = [[a[0] + "1"] for a in questions["answers"]]
    return {"data_prep_raw_questions": questions, "data_prep_raw_corpus": corpus,
            "data_prep_raw_gold": gold, "data_prep_raw_practice": gold.iloc[:0],
            "data_prep_raw_world": {"seed": variant, "entities": []},
            "data_validation_report": {"success": True, "tables": {}}}


def test_data_prep_publishes_all_or_nothing(tmp_path, tiny_tables):
    pipeline = data_prep_pipeline().filter(node_names=["publish"])
    outputs = ["questions", "corpus", "gold_trajectories", "practice_trajectories", "world_kb"]
    entries = _entries("catalog_data_prep.yml", outputs, tmp_path)
    root = tmp_path / "data"
    old, new, restore_old = _old_and_new(
        root, lambda: _run(pipeline, entries, _tables(tiny_tables, 0)),
        lambda: _run(pipeline, entries, _tables(tiny_tables, 1)), tmp_path / "saved")
    assert old != new and sorted(old) == sorted(new) and len(old) == 1 + 5  # the folder, five files
    _assert_old_or_new(lambda: _run(pipeline, entries, _tables(tiny_tables, 1)),
                       lambda: _next_start(pipeline, entries), root, old, new, restore_old)


def _perturbed(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    return other


def test_a_model_and_its_metrics_publish_together(tmp_path, tiny_model, tiny_tokenizer):
    entries = _entries("catalog_sft.yml", ["sft_model", "sft_metrics"], tmp_path)
    root = tmp_path / "data"

    def pipe(model, metrics) -> Pipeline:
        return Pipeline([node(lambda: ({"model": model, "tokenizer": tiny_tokenizer}, metrics),
                              None, ["sft_model", "sft_metrics"], name="run_sft")])

    old_pipe, new_pipe = pipe(tiny_model, {"sft/loss": 1.0}), pipe(_perturbed(tiny_model),
                                                                     {"sft/loss": 0.5})
    old, new, restore_old = _old_and_new(root, lambda: _run(old_pipe, entries, {}),
                                         lambda: _run(new_pipe, entries, {}), tmp_path / "saved")
    _assert_old_or_new(lambda: _run(new_pipe, entries, {}),
                       lambda: _next_start(new_pipe, entries), root, old, new, restore_old)


def _trajectory(answer: str) -> Trajectory:
    return Trajectory(question_id="q1", sample_idx=0, prompt_len=1, token_ids=[1, 2, 3],
                      mask=[0, 1, 1], logprobs=[0.0, -0.5, -0.25],
                      messages=[{"role": "user", "content": "?"}],
                      turns=[{"role": "assistant", "start": 1, "end": 3, "parse_errors": []}],
                      answer=answer, finish_reason="answer")


@pytest.mark.parametrize("case", ["trajectories", "json_metrics", "model_dir"])
def test_a_single_save_is_old_or_new(tmp_path, case, tiny_model, tiny_tokenizer):
    root = tmp_path / "out"
    if case == "trajectories":
        dataset = TrajectoryDataset(filepath=str(root / "rollouts.parquet"))
        old_data = [_trajectory("Norvale")] * 3
        new_data = [_trajectory("Mirebrook " * 50)] * 40
    elif case == "json_metrics":  # the catalog's sft_metrics entry, as the stage writes it
        cfg = _entries("catalog_sft.yml", ["sft_metrics"], root)["sft_metrics"]
        dataset = AbstractDataset.from_config("sft_metrics", cfg)
        old_data = {"sft/loss": 1.0}
        new_data = {"sft/loss": 0.5, "history": [{"step": i, "loss": 1 / (i + 1)}
                                                  for i in range(200)]}
    else:
        cfg = _entries("catalog_sft.yml", ["sft_model"], root)["sft_model"]
        dataset = AbstractDataset.from_config("sft_model", cfg)
        old_data = {"model": tiny_model, "tokenizer": tiny_tokenizer}
        new_data = {"model": _perturbed(tiny_model), "tokenizer": tiny_tokenizer}
    old, new, restore_old = _old_and_new(root, lambda: dataset.save(old_data),
                                         lambda: dataset.save(new_data), tmp_path / "saved")
    def next_read() -> None:  # the next run's first load of the output
        try:
            dataset.load()
        except Exception:  # noqa: BLE001 - what is on disk is judged by the snapshot
            pass

    # A lone file is published by its last write point (the rename): no kill sees it new,
    # except for the model directory, whose swap is two renames under a journal.
    _assert_old_or_new(lambda: dataset.save(new_data), next_read, root, old, new, restore_old,
                       both=case == "model_dir")
