"""The test suite's own MLflow store keeps artifacts out of the project (issue 16: tests left
artifact folders in mlruns/0 with no database rows)."""

from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_started_implicitly_keeps_its_artifacts_out_of_the_project(_isolated_mlflow):
    # Other tests point MLflow at stores of their own (and some leave it there): use the
    # suite's store explicitly.
    mlflow.set_tracking_uri(_isolated_mlflow)
    with mlflow.start_run() as run:  # no experiment set: the Default one
        mlflow.log_text("x", "a.txt")
    where = Path(mlflow.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert (where / "a.txt").exists()
    assert not where.is_relative_to(ROOT)
