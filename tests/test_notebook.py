"""notebooks/compare_runs.ipynb rebuilds the comparison table from an MLflow store."""

from pathlib import Path

import mlflow
import nbformat

from tirl import tracking

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "compare_runs.ipynb"


def test_notebook_rebuilds_table(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tirl")
    for variant, seed, em in (("vspo_prs", 0, 0.5), ("vspo_prs", 1, 0.7), ("grpo_binary", 0, 0.2)):
        with mlflow.start_run():
            mlflow.set_tags({"variant": variant, "seed": str(seed)})
            tracking.log_metrics({"eval/all/exact_match": em, "eval/single_hop/exact_match": em})
    monkeypatch.setenv("TIRL_MLFLOW_URI", uri)
    namespace: dict = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, str(NOTEBOOK), "exec"), namespace)
    table = namespace["table"].set_index("variant")
    assert table.loc["vspo_prs", "all"] == 0.6
    assert table.loc["grpo_binary", "seeds"] == 1
