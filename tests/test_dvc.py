"""dvc.yaml stays in step with the Kedro project it drives.

Each DVC stage runs ``kedro run --pipelines=P [--nodes=...] [--tags=...]``. From that command the
tests rebuild the Kedro node selection and check, against the catalog and parameter files:
- the stage's outs/metrics/plots are exactly the catalog paths those nodes write;
- every persisted dataset they read is a dep (the file, or a folder holding it);
- every ``params:<key>`` they read is tracked, and every tracked key exists in its file;
- every tirl source file they import is a dep;
- the variant list and the seeds of the matrix stages are tirl.variants' own.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DVC = str(Path(sys.executable).with_name("dvc"))
KEDRO = str(Path(sys.executable).with_name("kedro"))

# The code each kind of stage runs, beyond what its catalog datasets load (module names; their
# tirl imports are followed statically). The experiment wiring (variant params, child runs)
# lives in tirl/experiments.py, listed as a file (see LEAVES); the variant and seed tables it
# wires from (tirl.variants) are followed.
ENTRY_MODULES = {
    "pretrain": ["tirl.pipelines.pretrain.pipeline"],
    "data_prep": ["tirl.pipelines.data_prep.pipeline"],
    "model_init": ["tirl.pipelines.model_init.pipeline"],
    "sft": ["tirl.pipelines.sft.pipeline"],
    "rl": ["tirl.pipelines.rl.nodes", "tirl.variants"],
    "evaluation": ["tirl.pipelines.evaluation.nodes", "tirl.variants"],
    "evaluation_sft_only": ["tirl.pipelines.evaluation.nodes", "tirl.variants"],
    "evaluation_direct_inference": ["tirl.pipelines.evaluation.nodes", "tirl.variants"],
    "report": ["tirl.pipelines.report.pipeline"],
    "report_main": ["tirl.pipelines.report.pipeline"],
}
ENTRY_FILES = {"rl": ["src/tirl/experiments.py"], "evaluation": ["src/tirl/experiments.py"],
               "evaluation_sft_only": ["src/tirl/experiments.py"],
               "evaluation_direct_inference": ["src/tirl/experiments.py"]}
# Imported but unable to change a stage's outputs: MLflow logging, the redaction of what it
# logs and where keys come from (a key decides whether a judge call is allowed, never its
# verdict), progress reports (terminal bars or log lines), and empty __init__.py files (see
# not_a_dep).
NOT_DEPS = {"src/tirl/tracking.py", "src/tirl/core/secrets.py", "src/tirl/core/progress.py"}
# Stage -> modules it runs only to *measure* its outputs, deliberately not deps: the pretrain
# stage probes the base it built (for the model card), and a change to the evaluation code
# must not make hours of pretraining stale. The card records the probe at build time;
# scripts/reading_probe.py re-measures, and a slow test checks that the two agree. (Training
# reads only params:agent.search; the agent environment's rollout part serves the probe.)
#: Where the stages write their wall-clock figures (catalog ``*_timings``).
MEASUREMENTS = "data/08_reporting/timings"
MEASURED_ONLY = {"pretrain": {"tirl.core.eval.probe", "tirl.core.agent.env"}}
# Files whose tirl imports are not followed: tirl.experiments imports the nodes of every stage
# to wire all the chains, but a stage runs only its own; ENTRY_MODULES names what it runs.
LEAVES = {"tirl.experiments"}


def not_a_dep(path: str) -> bool:
    return path in NOT_DEPS or (Path(path).name == "__init__.py"
                                and not (ROOT / path).read_text().strip())


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# --------------------------------------------------------------------------- loading

@pytest.fixture(scope="module")
def dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def stages() -> dict[str, dict[str, Any]]:
    """Resolved DVC stages (templating applied): name -> cmd, deps, params, outs."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out: dict[str, dict[str, Any]] = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            params: dict[str, list[str]] = {}
            deps: list[str] = []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    params.setdefault(dep.def_path, []).extend(dep.params)
                else:
                    deps.append(dep.def_path)
            out[stage.name] = {
                "cmd": stage.cmd, "deps": deps, "params": params,
                "outs": {o.def_path: {"metric": bool(o.metric), "plot": bool(o.plot),
                                      "cache": o.use_cache} for o in stage.outs}}
    return out


@pytest.fixture(scope="module")
def catalog() -> Any:
    """The catalog configuration (base + local, as `kedro run` sees it) with its patterns."""
    from kedro.config import OmegaConfigLoader
    from kedro.io.catalog_config_resolver import CatalogConfigResolver

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    return CatalogConfigResolver(config=loader["catalog"],
                                 default_runtime_patterns={"{default}": {"type": "MemoryDataset"}})


class _Pipelines:
    """The registered pipelines, built as tirl.pipeline_registry builds them (stage pipelines
    by folder, then the experiment chains) but without Kedro's project bootstrap, and lazily:
    a broken chain fails the stages that run it, not the stage pipelines."""

    def __init__(self) -> None:
        with _cwd(ROOT):  # the report pipeline reads experiments.seeds from ./conf
            self.stages = {d.name: importlib.import_module(f"tirl.pipelines.{d.name}.pipeline")
                           .create_pipeline()
                           for d in sorted((SRC / "tirl" / "pipelines").iterdir())
                           if (d / "pipeline.py").is_file()}
        self._chains: dict[str, Any] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.stages or name in self.chains

    def __getitem__(self, name: str) -> Any:
        return self.stages[name] if name in self.stages else self.chains[name]

    @property
    def chains(self) -> dict[str, Any]:
        if self._chains is None:
            from tirl.experiments import experiment_pipelines
            from tirl.variants import configured_seeds

            self._chains = experiment_pipelines(self.stages, configured_seeds(ROOT / "conf"))
        return self._chains


@pytest.fixture(scope="module")
def kedro_pipelines() -> _Pipelines:
    return _Pipelines()


def _layers(resolver: Any, name: str) -> list[dict[str, Any]]:
    """A dataset's config, then that of each dataset it wraps (``dataset:``), outermost first."""
    config, out = resolver.resolve_pattern(name), []
    while isinstance(config, dict):
        out.append(config)
        config = config.get("dataset")
    return out


def dataset_path(resolver: Any, name: str) -> str | None:
    """The file/folder a dataset persists to (``filepath``/``path``, also inside wrappers such
    as MlflowArtifactDataset/AtomicDataset), or None for memory and metric-only datasets."""
    for cfg in _layers(resolver, name):
        for key in ("filepath", "path"):
            if cfg.get(key):
                return os.path.normpath(str(cfg[key]))
    return None


def dataset_types(resolver: Any, name: str) -> list[str]:
    return [str(cfg.get("type", "")) for cfg in _layers(resolver, name)]


def parse_cmd(cmd: str) -> dict[str, Any]:
    """``kedro run --pipelines=P --nodes=a,b --tags=t`` -> {"pipeline", "nodes", "tags", ...}."""
    args = shlex.split(cmd)
    assert args[:2] == ["kedro", "run"], f"stage command must be `kedro run ...`: {cmd!r}"
    opts: dict[str, Any] = {"pipeline": "__default__", "nodes": [], "tags": [], "params": {},
                            "other": []}
    for arg in args[2:]:
        key, _, value = arg.partition("=")
        if key == "--pipelines":  # --pipeline (-p) is deprecated in Kedro 1.7
            opts["pipeline"] = value
        elif key in ("--nodes", "-n"):
            opts["nodes"] += [v for v in value.split(",") if v]
        elif key in ("--tags", "-t"):
            opts["tags"] += [v for v in value.split(",") if v]
        elif key == "--params":
            opts["params"].update(item.split("=", 1) for item in value.split(","))
        else:
            opts["other"].append(arg)
    return opts


def selected_nodes(pipes: _Pipelines, cmd: str) -> Any:
    opts = parse_cmd(cmd)
    assert not opts["other"], f"unexpected options {opts['other']} in {cmd!r} (DVC runs base env)"
    assert opts["pipeline"] in pipes, f"{cmd!r}: no pipeline {opts['pipeline']!r}"
    base = _base_parameters()
    for key in opts["params"]:  # runtime overrides must name existing keys (no typo)
        assert lookup(base, key), f"{cmd!r}: --params key {key!r} not in conf/base parameters"
    pipe = pipes[opts["pipeline"]]
    if opts["nodes"]:
        pipe = pipe.only_nodes(*opts["nodes"])  # raises on an unknown node name
    if opts["tags"]:
        pipe = pipe.only_nodes_with_tags(*opts["tags"])
    assert pipe.nodes, f"{cmd!r} selects no node"
    return pipe


def _base_parameters() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((ROOT / "conf/base").glob("parameters*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def covered(path: str, by: list[str]) -> bool:
    """``path`` is one of ``by`` or lies in a folder of ``by``."""
    p = Path(path)
    return any(p == Path(b) or Path(b) in p.parents for b in by)


def kind(stage_name: str) -> str:
    return stage_name.split("@")[0]


def import_closure(modules: list[str], skip: set[str] = frozenset()) -> set[str]:
    """Source files (relative to ROOT) of ``modules`` and every tirl module they import,
    including imports inside functions, found statically."""
    def file_of(mod: str) -> Path | None:
        base = SRC / mod.replace(".", "/")
        for cand in (base / "__init__.py", base.with_suffix(".py")):
            if cand.is_file():
                return cand
        return None

    seen: set[str] = set()
    todo = list(modules)
    while todo:
        mod = todo.pop()
        if mod in skip:
            continue
        path = file_of(mod)
        if path is None or str(path.relative_to(ROOT)) in seen:
            continue
        seen.add(str(path.relative_to(ROOT)))
        if mod in LEAVES:
            continue
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("tirl")]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("tirl"):
                    todo += [target] + [f"{target}.{a.name}" for a in node.names]
    return seen


def lookup(mapping: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(mapping, dict) or part not in mapping:
            return False
        mapping = mapping[part]
    return True


# --------------------------------------------------------------------------- structure

def test_dvc_yaml_parses_with_every_stage(stages: dict[str, dict[str, Any]]) -> None:
    assert {"data_prep", "model_init", "sft", "evaluation_sft_only", "evaluation_direct_inference",
            "report"} <= set(stages)
    assert {kind(s) for s in stages} == set(ENTRY_MODULES), sorted(stages)


def test_variants_are_tirl_variants(dvc_yaml: dict[str, Any]) -> None:
    from tirl.variants import VARIANTS

    declared = [v["variants"] for v in dvc_yaml["vars"] if isinstance(v, dict) and "variants" in v]
    assert declared == [list(VARIANTS)]


def test_matrix_stages_cover_every_variant_and_seed(stages: dict[str, dict[str, Any]]) -> None:
    from tirl.variants import VARIANTS

    # DVC reads the seeds from conf/base only (its `vars`); Kedro adds conf/local on top.
    seeds = yaml.safe_load((ROOT / "conf/base/parameters_experiments.yml").read_text())[
        "experiments"]["seeds"]
    for prefix in ("rl", "evaluation"):
        assert {s for s in stages if s.startswith(prefix + "@")} == \
            {f"{prefix}@{v}-{k}" for v in VARIANTS for k in seeds}
    assert f"sft_only.seed{seeds[0]}.evaluate" in stages["evaluation_sft_only"]["cmd"]
    assert f"direct_inference.seed{seeds[0]}.evaluate" in \
        stages["evaluation_direct_inference"]["cmd"]


# --------------------------------------------------------------------------- per stage

def _stage_names() -> list[str]:
    """Stage names from dvc.yaml without resolving templates (for parametrisation)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return [s.name for s in repo.index.stages]


STAGE_NAMES = _stage_names()


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_outs_are_exactly_the_catalog_paths_the_nodes_write(
        name: str, stages: dict[str, dict[str, Any]], catalog: Any,
        kedro_pipelines: _Pipelines) -> None:
    stage = stages[name]
    pipe = selected_nodes(kedro_pipelines, stage["cmd"])
    written = {p for ds in pipe.all_outputs() if (p := dataset_path(catalog, ds))}
    # Wall-clock measurements differ on every run: never outs (tirl.core.measurements), or
    # every rerun of an unchanged stage would read as a changed output.
    measured = {p for p in written if covered(p, [MEASUREMENTS])}
    assert not measured & set(stage["outs"]), f"{name}: measurements declared as outs"
    written -= measured
    assert set(stage["outs"]) == written, (
        f"{name}: declared but not written {sorted(set(stage['outs']) - written)}; "
        f"written but not declared {sorted(written - set(stage['outs']))}")


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_persisted_inputs_are_deps_and_data_deps_are_inputs(
        name: str, stages: dict[str, dict[str, Any]], catalog: Any,
        kedro_pipelines: _Pipelines) -> None:
    stage = stages[name]
    pipe = selected_nodes(kedro_pipelines, stage["cmd"])
    read = {p for ds in pipe.inputs() if not ds.startswith("params:") and ds != "parameters"
            and (p := dataset_path(catalog, ds))}
    missing = sorted(p for p in read if not covered(p, stage["deps"]))
    assert not missing, f"{name} reads {missing} but does not depend on them"
    data_deps = [d for d in stage["deps"] if d.startswith("data/")]
    stale = [d for d in data_deps if not any(covered(p, [d]) for p in read)]
    assert not stale, f"{name} depends on {stale} but its nodes read none of it"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_params_read_are_tracked_by_key_and_exist(
        name: str, stages: dict[str, dict[str, Any]], kedro_pipelines: _Pipelines) -> None:
    stage = stages[name]
    tracked = [(f, k) for f, keys in stage["params"].items() for k in keys]
    for file, key in tracked:
        assert file.startswith("conf/base/parameters"), f"{name}: {file} is not a Kedro file"
        assert lookup(yaml.safe_load((ROOT / file).read_text()), key), \
            f"{name}: key {key!r} not in {file}"
    pipe = selected_nodes(kedro_pipelines, stage["cmd"])
    for param in sorted(ds[len("params:"):] for ds in pipe.inputs() if ds.startswith("params:")):
        assert any(k == param or k.startswith(param + ".") or param.startswith(k + ".")
                   for _, k in tracked), f"{name} reads params:{param} but tracks {tracked}"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_source_deps_cover_the_code_the_stage_runs(
        name: str, stages: dict[str, dict[str, Any]], catalog: Any,
        kedro_pipelines: _Pipelines) -> None:
    stage = stages[name]
    pipe = selected_nodes(kedro_pipelines, stage["cmd"])
    # Custom datasets (tirl.datasets.*) of what the nodes read and write run too.
    custom = {t.rpartition(".")[0] for ds in pipe.all_inputs() | pipe.all_outputs()
              for t in dataset_types(catalog, ds) if t.startswith("tirl.")}
    code = import_closure(ENTRY_MODULES[kind(name)] + sorted(custom), MEASURED_ONLY.get(kind(name), set()))
    code |= set(ENTRY_FILES.get(kind(name), []))
    src_deps = [d for d in stage["deps"] if d.startswith("src/")]
    assert not [d for d in src_deps if not (ROOT / d).exists()], f"{name}: missing src deps"
    missing = sorted(f for f in code if not not_a_dep(f) and not covered(f, src_deps))
    assert not missing, f"{name} runs {missing} but does not depend on it"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_reports_are_uncached_and_models_cached(name: str,
                                               stages: dict[str, dict[str, Any]]) -> None:
    """Metrics, plots and reports (data/08_reporting) are small and read in place by `dvc
    metrics/plots`: kept out of the cache; models and data tables go to the cache."""
    for path, out in stages[name]["outs"].items():
        report = out["metric"] or out["plot"] or path.startswith("data/08_reporting/")
        if report or path.startswith(("data/06_models/", "data/03_primary/")):
            assert out["cache"] is not report, f"{name}: {path} cache={out['cache']}"


# --------------------------------------------------------------------------- the dvc CLI

def _dvc(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([DVC, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args", [("status",), ("dag", "--dot"), ("params", "diff")])
def test_dvc_cli_runs_in_the_repo(args: tuple[str, ...]) -> None:
    proc = _dvc(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_dag_orders_the_chain() -> None:
    dot = _dvc("dag", "--dot").stdout
    for edge in ('"data_prep" -> "model_init"', '"model_init" -> "sft"',
                 '"sft" -> "rl@vspo_prs-0"', '"rl@vspo_prs-0" -> "evaluation@vspo_prs-0"',
                 '"sft" -> "evaluation_sft_only"', '"evaluation@cispo_prs-0" -> "report"',
                 '"evaluation_sft_only" -> "report"', '"rl@grpo_binary-0" -> "report"',
                 '"model_init" -> "evaluation_direct_inference"',
                 '"evaluation_direct_inference" -> "report"'):
        assert edge in dot, f"missing edge {edge}"


def test_plots_show_draws_reward_curves(tmp_path: Path) -> None:
    """`dvc plots show` on synthetic histories: one curve per run, reward columns by step."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "conf/base").mkdir(parents=True)
    shutil.copy(ROOT / "conf/base/parameters_experiments.yml", tmp_path / "conf/base")
    assert _dvc("init", "--no-scm", "-q", cwd=tmp_path).returncode == 0
    runs = ["vspo_prs/seed0", "grpo_binary/seed0"]
    for i, run in enumerate(runs):
        hist = tmp_path / "data/07_model_output/rl" / run / "history.csv"
        hist.parent.mkdir(parents=True)
        hist.write_text("step,reward/mean,reward/format,reward/quality,actor/kl\n"
                        f"0.0,0.{i}1,0.5,0.0,0.0\n1.0,0.{i}2,0.6,0.1,0.01\n")
    proc = _dvc("plots", "show", "--json", cwd=tmp_path)
    data = json.loads(proc.stdout)["data"]
    for run in runs:
        [plot] = data[f"data/07_model_output/rl/{run}/history.csv"]
        spec = plot["content"]
        assert spec["encoding"]["x"]["field"] == "step"
        values = spec["data"]["values"]
        assert {v["field"] for v in values} == {"reward/mean", "reward/format", "reward/quality"}
        assert [v["reward/mean"] for v in values if v["field"] == "reward/mean"] == \
            [f"0.{runs.index(run)}1", f"0.{runs.index(run)}2"]


# --------------------------------------------------------------------------- fresh clone

def _fresh_clone(dest: Path) -> None:
    """The working tree as a fresh clone would get it (tracked + untracked-not-ignored files),
    in a new git repository, without touching this repository's git state."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def _clone_that_runs(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh clone and the environment to run `dvc repro` there (the project venv first on
    PATH, as after `source .venv/bin/activate`); skips when Kedro cannot list data_prep."""
    clone = tmp_path / "clone"
    clone.mkdir()
    _fresh_clone(clone)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    env.pop("KEDRO_ENV", None)
    reg = subprocess.run([KEDRO, "registry", "list"], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=300)
    if reg.returncode != 0 or "- data_prep" not in reg.stdout:
        pytest.skip("`kedro registry list` in a fresh clone lacks data_prep: "
                    + (reg.stdout + reg.stderr)[-500:])
    return clone, env


def _run(args: list[str], clone: Path, env: dict[str, str], timeout: int
         ) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_dvc_repro_data_prep_on_a_fresh_clone(tmp_path: Path) -> None:
    """The real data_prep (base sizes, about a minute) through DVC, recorded in dvc.lock; the
    rebuilt data equal, byte for byte, what the committed dvc.lock records."""
    clone, env = _clone_that_runs(tmp_path)
    committed_path = clone / "dvc.lock"
    committed = (yaml.safe_load(committed_path.read_text())["stages"]
                 if committed_path.exists() else {})
    proc = _run([DVC, "repro", "data_prep"], clone, env, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    # nothing downstream ran: the other stages' records are untouched, their outputs absent
    assert set(lock) == {"data_prep"} | set(committed)
    assert all(lock[name] == committed[name] for name in committed if name != "data_prep")
    assert not (clone / "data/06_models/base/config.json").exists()
    if "data_prep" in committed:  # a seeded world: the same bytes on every machine
        assert {o["path"]: o["md5"] for o in lock["data_prep"]["outs"]} == \
            {o["path"]: o["md5"] for o in committed["data_prep"]["outs"]}
    dvc_outs = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["data_prep"]["outs"]
    expected = {o if isinstance(o, str) else next(iter(o)) for o in dvc_outs}
    assert {o["path"] for o in lock["data_prep"]["outs"]} == expected
    for out in lock["data_prep"]["outs"]:
        assert (clone / out["path"]).is_file() and out["md5"] and out["size"] > 0
    params = lock["data_prep"]["params"]["conf/base/parameters_data_prep.yml"]["data_prep"]
    assert params == yaml.safe_load((clone / "conf/base/parameters_data_prep.yml").read_text())[
        "data_prep"]
    again = _run([DVC, "repro", "data_prep"], clone, env, timeout=600)
    assert again.returncode == 0 and "didn't change" in again.stdout, again.stdout[-2000:]


@pytest.mark.slow
def test_dvc_repro_rebuilds_every_stage_on_a_fresh_clone(tmp_path: Path) -> None:
    """The whole graph with the tiny conf/test sizes (KEDRO_ENV=test; several minutes on two
    cores): every stage runs, every declared output exists, the reward curves draw."""
    clone, env = _clone_that_runs(tmp_path)
    env["KEDRO_ENV"] = "test"
    proc = _run([DVC, "repro"], clone, env, timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    names = _run([DVC, "stage", "list", "--name-only"], clone, env, timeout=120).stdout.split()
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(names)
    for name, entry in lock.items():
        for out in entry["outs"]:
            assert (clone / out["path"]).exists(), f"{name}: {out['path']} missing"
    status = _run([DVC, "status"], clone, env, timeout=300)
    assert "up to date" in status.stdout, status.stdout[-2000:]

    plots = json.loads(_run([DVC, "plots", "show", "--json"], clone, env, timeout=300).stdout)
    histories = [k for k in plots["data"] if k.endswith("history.csv")]
    assert len(histories) == len([n for n in names if n.startswith("rl@")])
    for key in histories:
        values = plots["data"][key][0]["content"]["data"]["values"]
        mean = [float(v["reward/mean"]) for v in values if v["field"] == "reward/mean"]
        assert mean and all(0.0 <= m <= 1.0 for m in mean), key
