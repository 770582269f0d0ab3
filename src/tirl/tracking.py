"""The one module (besides hooks) that talks to MLflow.

Core code never imports mlflow: it receives an ``on_metrics(metrics, step)`` callback. This
module builds such callbacks and opens child runs for variants, and degrades to logging only
when no MLflow run is active (e.g. plain pytest of a node). Every param, tag and text it
writes goes through :func:`tirl.core.secrets.redact` first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from tirl.core.secrets import redact

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[Mapping[str, float], int], None]

#: Tags that link a resumed run to the run it continues (:func:`make_metrics_logger`).
RESUME_KEY_TAG, RESUMED_FROM_TAG, RESUMED_BY_TAG = "resume_key", "resumed_from", "resumed_by"


def _active() -> bool:
    return mlflow.active_run() is not None


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


def set_tags(tags: Mapping[str, str]) -> None:
    if _active():
        mlflow.set_tags({k: redact(str(v)) for k, v in tags.items()})


def describe_run(run_id: str, text: str) -> None:
    """Set the run's description (the UI's "Description" box, tag ``mlflow.note.content``);
    works on a run that has already ended. Never raises: a description is not worth a run."""
    try:
        mlflow.MlflowClient().set_tag(run_id, "mlflow.note.content", redact(text))
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not describe MLflow run %s: %s", run_id, exc)


def end_runs(run_id: str | None, status: str) -> None:
    """End every run open in this thread (child runs first) and ``run_id`` (which may be
    open in another thread) with ``status`` (``"KILLED"``, ``"FAILED"``). Never raises: it
    runs on the way out of a dying process."""
    try:
        while mlflow.active_run() is not None:
            mlflow.end_run(status)
        if run_id is not None:
            client = mlflow.MlflowClient()
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001 - a store that fails now cannot be helped
        logger.warning("could not mark MLflow run %s %s: %s", run_id, status, exc)


#: The MLflow namespace of each stage's metrics: the one place a metric prefix is set. Core
#: code emits unprefixed names (``loss``, ``reward/mean``); a stage's node logs them under its
#: prefix. (Evaluation keeps ``eval/``: the name the report, the notebook and the compare view
#: query.)
STAGE_PREFIXES = {"pretrain": "pretrain/", "sft": "sft/", "rl": "rl/", "evaluation": "eval/",
                  "inspect_rollouts": "inspect_rollouts/", "inspect_rewards": "inspect_rewards/"}


def stage_prefix(stage: str | None) -> str:
    """``"rl/"`` for ``"rl"``; ``""`` for None (keys already namespaced by the caller)."""
    if stage is None:
        return ""
    if stage not in STAGE_PREFIXES:
        raise ValueError(f"no metric prefix for stage {stage!r} (known: {sorted(STAGE_PREFIXES)})")
    return STAGE_PREFIXES[stage]


def prefixed(metrics: Mapping[str, Any], stage: str | None) -> dict[str, Any]:
    """``metrics`` with the keys under ``stage``'s prefix."""
    prefix = stage_prefix(stage)
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def make_metrics_logger(stage: str | None = None, *,
                        resumable: str | None = None) -> MetricsCallback:
    """A callback that logs a step's finite scalar metrics to the active run, under the
    prefix of ``stage`` (:data:`STAGE_PREFIXES`) so stages do not collide in one run.

    ``resumable`` names what a resumed run continues (the RL stage passes its checkpoint
    folder). The active run is tagged with it (``resume_key``); when the first step logged is
    past 0, the run was resumed from a checkpoint and its metrics continue another run's:
    it is linked to the newest earlier run of that key (tags ``resumed_from`` here,
    ``resumed_by`` there), so a curve split by a kill is never split without a link. That
    run, if still RUNNING (a SIGKILL), is marked KILLED.
    """
    key = _resume_key(resumable) if resumable is not None else None
    if key is not None:
        set_tags({RESUME_KEY_TAG: key})
    first = [True]

    def on_metrics(metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in prefixed(metrics, stage).items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if _active():
            if first[0] and key is not None and step > 0:
                link_resumed(key, step)
            first[0] = False
            mlflow.log_metrics(clean, step=step)
        else:
            logger.debug("step %d: %s", step, clean)

    return on_metrics


def _resume_key(resumable: str) -> str:
    # A digest: the tag is matched in a search filter, where a path's quotes would not do.
    return hashlib.sha256(resumable.encode("utf-8")).hexdigest()[:16]


def link_resumed(key: str, step: int) -> str | None:
    """Tag the active run as resumed at ``step`` from the newest earlier run tagged
    ``resume_key = key`` (and that run as resumed by this one); that run's id, or None."""
    run = mlflow.active_run()
    found = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], output_format="list", max_results=10,
        filter_string=f"tags.{RESUME_KEY_TAG} = '{key}'",
        order_by=["attributes.start_time DESC"])
    previous = next((r for r in found if r.info.run_id != run.info.run_id
                     and r.info.start_time <= run.info.start_time), None)
    mlflow.set_tag("resumed_at_step", str(step))
    if previous is None:
        logger.warning("run %s resumes at step %d, but no earlier MLflow run in this "
                       "experiment has resume_key %s", run.info.run_id, step, key)
        return None
    mlflow.set_tag(RESUMED_FROM_TAG, previous.info.run_id)
    client = mlflow.MlflowClient()
    client.set_tag(previous.info.run_id, RESUMED_BY_TAG, run.info.run_id)
    if previous.info.status == "RUNNING":
        # Its checkpoints are being continued here, so its process is gone: a SIGKILL (which
        # no handler sees) left it RUNNING.
        client.set_terminated(previous.info.run_id, "KILLED")
    logger.info("run %s resumes run %s at step %d", run.info.run_id, previous.info.run_id, step)
    return previous.info.run_id


TableCallback = Callable[[list[dict[str, Any]], int], None]


def make_table_logger(stage: str, name: str) -> TableCallback:
    """A callback that appends a step's rows to the table ``<stage prefix><name>.json`` of
    the active run (``rl/completions.json``): one table over the run, with a ``step``
    column, that the MLflow UI shows in the run's artifacts and compares across runs."""
    artifact = f"{stage_prefix(stage)}{name}.json"

    def on_rows(rows: list[dict[str, Any]], step: int) -> None:
        if not rows:
            return
        if not _active():
            logger.debug("step %d: %d %s rows", step, len(rows), name)
            return
        import pandas as pd

        clean = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()}
                 for row in rows]
        mlflow.log_table(pd.DataFrame(clean), artifact_file=artifact)

    return on_rows


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, stage: str | None = None) -> None:
    """Log final (non per-step) scalar metrics, e.g. evaluation results, under ``stage``'s prefix."""
    make_metrics_logger(stage)(metrics, step if step is not None else 0)


def flatten(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def _find_child(parent_id: str, name: str) -> str | None:
    """The id of an existing child run called ``name`` under ``parent_id``, if any.

    A variant's nodes (train, evaluate) run one after another; the second re-enters the
    child run that the first opened, so each variant stays one run in the UI."""
    exp = mlflow.get_run(parent_id).info.experiment_id
    found = mlflow.search_runs(
        experiment_ids=[exp], output_format="list", max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and "
                      f"tags.mlflow.runName = '{name}'")
    return found[0].info.run_id if found else None


@contextlib.contextmanager
def child_run(name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run the body inside a child run named ``name`` (nested under the active run).

    When the active run already *is* this variant (a standalone ``kedro run
    --pipelines=<variant>``), no child is opened: one variant, one run. A child of that name
    that already exists under the parent is resumed rather than duplicated.
    """
    active = mlflow.active_run()
    if active is None or active.info.run_name == name:
        if active is not None:
            set_tags({"variant": name, **(tags or {})})
            if params:
                _log_params(params)
        yield
        return
    parent_id = active.info.run_id
    # active_run() holds the tags as of its start; read the stored run for the current ones.
    parent_tags = {k: v for k, v in mlflow.get_run(parent_id).data.tags.items()
                   if not k.startswith("mlflow.")}
    existing = _find_child(parent_id, name)
    with mlflow.start_run(run_id=existing, run_name=None if existing else name, nested=True):
        set_tags({**parent_tags, "variant": name, **(tags or {})})
        if params:
            _log_params(params)
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            # Killed, not failed (mlflow's context manager would say FAILED).
            if _active():
                mlflow.end_run("KILLED")
            raise


def _log_params(params: Mapping[str, Any]) -> None:
    # MLflow refuses to change a logged param; only log keys the run does not have yet.
    run = mlflow.active_run()
    have = mlflow.get_run(run.info.run_id).data.params if run else {}
    new = {k: redact(str(v))[:MAX_PARAM_VAL_LENGTH] for k, v in flatten(params).items()
           if k not in have}
    if new:
        mlflow.log_params(new)


def log_outputs(outputs: Mapping[str, Any]) -> None:
    """Log a node's text and table outputs as artifacts of the active run.

    Strings become ``<name>.md``, DataFrames ``<name>.csv``; anything else (models, figures
    saved through the catalog) is left to the catalog.
    """
    if not _active():
        return
    import pandas as pd

    for name, value in outputs.items():
        if isinstance(value, str):
            mlflow.log_text(redact(value), f"{name}.md")
        elif isinstance(value, pd.DataFrame):
            mlflow.log_text(redact(value.to_csv(index=False)), f"{name}.csv")


PARENT_TAG = "mlflow.parentRunId"


def _experiment_runs(experiment: str, tracking_uri: str | None) -> list[Any]:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} at "
                         f"{mlflow.get_tracking_uri()}")
    return mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list",
                              order_by=["attributes.start_time DESC"])


def _has_eval(run: Any) -> bool:
    return "variant" in run.data.tags and any(k.startswith("eval/") for k in run.data.metrics)


def newest_parent_run(experiment: str = "tirl", tracking_uri: str | None = None) -> str:
    """The id of the newest top-level run (a ``kedro run``) that holds evaluation results,
    in its own variant run (a single variant's chain) or in its children (``compare``)."""
    runs = _experiment_runs(experiment, tracking_uri)
    evaluated = {r.data.tags.get(PARENT_TAG) or r.info.run_id for r in runs if _has_eval(r)}
    for run in runs:  # newest first
        if PARENT_TAG not in run.data.tags and run.info.run_id in evaluated:
            return run.info.run_id
    raise ValueError(f"no run with evaluation results (eval/... metrics on a run tagged "
                     f"'variant') in MLflow experiment {experiment!r} at "
                     f"{mlflow.get_tracking_uri()}")


def subject_tags(model_init: Mapping[str, Any], data_prep: Mapping[str, Any]) -> dict[str, str]:
    """``model`` and ``data_source`` tags: what was trained and on which questions, the two
    things a runs table is filtered by (``tags.model = 'builtin'``)."""
    tags: dict[str, str] = {}
    if model_init.get("model"):
        tags["model"] = str(model_init["model"])
    source = data_prep.get("source")
    if source == "world":
        tags["data_source"] = f"world(seed={(data_prep.get('world') or {}).get('seed', 0)})"
    elif source == "flashrag":
        path = (data_prep.get("flashrag") or {}).get("questions_path")
        tags["data_source"] = f"flashrag({Path(str(path)).name if path else '?'})"
    if "data_source" in tags and data_prep.get("corpus") not in (None, "auto"):
        tags["data_source"] += f" corpus={data_prep['corpus']}"
    return tags


def data_source(params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """What a run's questions came from, as a label to group by: the run's ``data_source``
    tag (:func:`subject_tags`, the one labelling of the concept), and the Kedro
    env (``conf/test`` builds a smaller world than ``conf/base``). A run without that tag
    (an older one, or a DVC stage that ran one node without ``data_prep``) falls back on its
    ``data_prep.*`` parameters through the same function, then on the ``dvc.lock`` hash the
    data came from.

    >>> data_source({}, {"data_source": "world(seed=0)", "kedro_env": "test"})
    'world(seed=0) @ test'
    >>> data_source({"data_prep.source": "world", "data_prep.world.seed": "0"}, {})
    'world(seed=0) @ local'
    >>> data_source({}, {"kedro_env": "local", "dvc_lock_hash": "ab12"})
    'dvc.lock ab12 @ local'
    """
    label = tags.get("data_source") or subject_tags({}, _data_prep_of(params)).get("data_source")
    if not label:
        label = f"dvc.lock {tags.get('dvc_lock_hash', 'unknown')}"
    return f"{label} @ {tags.get('kedro_env', 'local')}"


def _data_prep_of(params: Mapping[str, str]) -> dict[str, Any]:
    """The ``data_prep`` keys :func:`subject_tags` reads, from a run's flat
    MLflow parameters (strings: ``data_prep.world.seed`` -> ``{"world": {"seed": "0"}}``)."""
    get = params.get
    return {"source": get("data_prep.source"), "corpus": get("data_prep.corpus"),
            "world": {"seed": get("data_prep.world.seed", 0)},
            "flashrag": {"questions_path": None if get("data_prep.flashrag.questions_path") in
                         (None, "None") else get("data_prep.flashrag.questions_path")}}


def load_eval_summaries(experiment: str = "tirl", tracking_uri: str | None = None,
                        parent_run_id: str | None = None, git_commit: str | None = None):
    """Evaluation summaries of the variant runs in ``experiment``, rebuilt from MLflow.

    One row per (run, benchmark) with columns ``variant``, ``seed``, ``data`` (the run's
    :func:`data_source`, read from its top-level run), ``run_id``, ``parent_run_id`` (the
    top-level run: its ``kedro run``), ``git_commit``, ``benchmark`` and each
    ``eval/<benchmark>/<metric>`` metric as ``<metric>`` — the shape
    :func:`tirl.core.eval.report.comparison_table` takes. Runs without a ``variant`` tag
    (stage runs, parents of comparisons) are skipped. ``parent_run_id`` keeps the runs of
    that ``kedro run`` (itself and its children); ``git_commit`` (a prefix will do) the runs
    of that commit; neither keeps every run.
    """
    import pandas as pd

    runs = _experiment_runs(experiment, tracking_uri)
    by_id = {r.info.run_id: r for r in runs}
    if parent_run_id and parent_run_id not in by_id:
        raise ValueError(f"parent_run_id {parent_run_id!r}: no such run in MLflow experiment "
                         f"{experiment!r} at {mlflow.get_tracking_uri()}")
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        tags = run.data.tags
        root = by_id.get(tags.get(PARENT_TAG, ""), run)
        if "variant" not in tags or (parent_run_id and root.info.run_id != parent_run_id):
            continue
        commit = tags.get("git_commit", "unknown")
        if git_commit and not commit.lower().startswith(git_commit.lower()):
            continue
        for key, value in run.data.metrics.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[0] != "eval":
                continue
            row = rows.setdefault((run.info.run_id, parts[1]), {
                "variant": tags["variant"], "seed": int(tags.get("seed", 0)),
                "data": data_source(root.data.params, root.data.tags),
                "run_id": run.info.run_id, "parent_run_id": root.info.run_id,
                "git_commit": commit, "benchmark": parts[1]})
            row[parts[2]] = value
    if git_commit and not rows:
        known = sorted({r.data.tags.get("git_commit", "unknown") for r in runs if _has_eval(r)})
        raise ValueError(f"git_commit {git_commit!r}: no evaluated run of that commit "
                         f"(evaluated commits: {known})")
    return pd.DataFrame(list(rows.values()))


def load_histories(run_ids: Mapping[str, str] | Any, stage: str, keys: Any,
                   tracking_uri: str | None = None):
    """Per-step metrics ``<stage prefix><key>`` of the runs ``run_ids`` (run id -> label),
    in the shape of the RL history dataset: one row per (run, step), columns ``variant``
    (the label), ``seed``, ``step`` and each key unprefixed. As in that dataset, a
    ``val/`` figure logged at the number of updates done sits on the step before."""
    import pandas as pd

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    prefix = stage_prefix(stage)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for run_id, label in dict(run_ids).items():
        seed = int(client.get_run(run_id).data.tags.get("seed", 0))
        for key in keys:
            shift = 1 if key.startswith("val/") else 0
            for m in client.get_metric_history(run_id, prefix + key):
                row = rows.setdefault((run_id, m.step - shift), {
                    "variant": label, "seed": seed, "step": m.step - shift})
                row[key] = m.value
    return pd.DataFrame(list(rows.values()))
