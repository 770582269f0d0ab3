"""``tirl``: the project's command line, in the words of the task rather than of Kedro.

(Not ``tirl/cli.py``: Kedro takes a project's ``<package>.cli.run`` as its own ``kedro run``.)

    tirl train --algo vspo --reward prs                       # = make run
    tirl train --model path/to/hf_model --questions nq.jsonl --corpus wiki.jsonl rl.train.lr=1e-6
    tirl eval --model data/06_models/rl/vspo_prs/seed0 --questions nq.jsonl
    tirl compare
    tirl report
    tirl params rl.train

Each command is a thin mapping onto a Kedro pipeline and its parameters: the same pipelines,
configuration files, MLflow runs and outputs as ``kedro run``. Overrides are ``key=value``
pairs with dotted keys (verl's style), parsed by OmegaConf's dot-list grammar, so
``evaluation.splits=[test_in_domain,test]`` is a list and ``rl.train.lr=1e-4`` a number; a
key no stage knows is refused before anything runs (:mod:`tirl.config_hook`). ``tirl run``
is ``kedro run`` itself, for every option Kedro has.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from tirl.core.config import ConfigError
from tirl.variants import project_parameters

#: ``--algo`` x ``--reward`` -> the variant chain (tirl.variants.VARIANTS names them so).
ALGOS = ("vspo", "grpo", "ppo", "cispo")
REWARDS = ("prs", "binary")

PARAMS_HELP = ("Overrides are KEY=VALUE with dotted keys, e.g. rl.train.lr=1e-4 "
               "evaluation.splits=[test_in_domain,test]; `tirl params [PREFIX]` lists the keys "
               "and their values.")


class NotAProject(click.ClickException):
    """``tirl`` run outside a project checkout."""

    exit_code = 2


def find_project(start: Path) -> Path:
    """The nearest folder from ``start`` upwards with a ``pyproject.toml`` that has a
    ``[tool.kedro]`` table (the project root, as Kedro defines it)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "kedro" in tomllib.loads(pyproject.read_text()).get("tool", {}):
                    return folder
            except (tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue
    raise NotAProject(f"not inside a tirl project (no pyproject.toml with [tool.kedro] in "
                      f"{start} or its parents); cd into your clone of tirl")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x,y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (OmegaConf's
    dot-list grammar, as Kedro's own ``--params`` uses, but one pair per argument, so
    commas inside a list do not split it)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"override {item!r}: expected KEY=VALUE, e.g. "
                                   f"rl.train.lr=1e-4")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))
    except OmegaConfBaseException as exc:
        raise click.UsageError(f"overrides {list(items)}: {exc}") from exc


def _existing_file(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise click.BadParameter(f"{path}: no such file", param_hint=option)
    return str(resolved)


def _model_value(model: str) -> str:
    """A local folder or file as an absolute path (the run's working directory is the
    project root); anything else as given (``builtin``, ``scratch``, an alias, a hub id)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def data_overrides(questions: str | None, corpus: str | None, model: str | None
                   ) -> dict[str, Any]:
    """The runtime parameters for ``--model``, ``--questions`` and ``--corpus``."""
    out: dict[str, Any] = {}
    if model is not None:
        out["model_init"] = {"model": _model_value(model)}
    questions = _existing_file(questions, "--questions")
    corpus = _existing_file(corpus, "--corpus")
    if questions is not None:
        out["data_prep"] = {"source": "flashrag",
                            "flashrag": {"questions_path": questions,
                                         **({"corpus_path": corpus} if corpus else {})}}
    elif corpus is not None:
        raise click.UsageError("--corpus needs --questions (a FlashRAG corpus goes with its "
                               "questions; docs/data.md)")
    return out


def with_user_split(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` plus, when the questions are the user's FlashRAG file, its split in
    ``evaluation.splits`` (so that the user's questions are evaluated, not only the world's),
    unless the overrides set the splits themselves."""
    # Here, not at the top: tirl.experiments imports the pipelines (torch), which
    # `tirl --help` and `tirl params` do not need.
    from tirl.experiments import deep_merge

    merged = deep_merge(params, overrides)
    prep = merged.get("data_prep", {})
    if prep.get("source") != "flashrag" or "splits" in overrides.get("evaluation", {}):
        return dict(overrides)
    split = prep.get("flashrag", {}).get("split", "test")
    splits = list(merged.get("evaluation", {}).get("splits", []))
    if not prep.get("flashrag", {}).get("keep_world_questions", True):
        splits = []  # the question table holds the user's file only
    if split not in splits:
        splits.append(split)
    return deep_merge(overrides, {"evaluation": {"splits": splits}})


class Project:
    """The project at ``root`` under Kedro environment ``env``."""

    def __init__(self, root: Path, env: str | None) -> None:
        self.root, self.env = root, env
        if env:
            # The registry reads the seed lists before Kedro sees --env
            # (tirl.variants.configured_seeds): the same environment for both.
            os.environ["KEDRO_ENV"] = env

    def parameters(self, runtime: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return project_parameters(self.root / "conf", self.env, dict(runtime or {}))

    def run(self, pipeline: str, runtime: Mapping[str, Any]) -> None:
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(self.root)
        with KedroSession.create(project_path=self.root, env=self.env,
                                 runtime_params=dict(runtime)) as session:
            session.run(pipeline_names=[pipeline])


def _project(env: str | None) -> Project:
    return Project(find_project(Path.cwd()), env)


_env = click.option("--env", default=None, metavar="ENV",
                    help="Kedro configuration environment (conf/<ENV> over conf/base), "
                         "e.g. test for tiny sizes, study for the study's budget.")
_overrides = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
_questions = click.option("--questions", default=None, metavar="Q.jsonl",
                          help="Your FlashRAG/Search-R1 questions (JSONL), evaluated next to "
                               "the built-in benchmarks.")
_corpus = click.option("--corpus", default=None, metavar="C.jsonl",
                       help="Your FlashRAG corpus (JSONL) for --questions.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Every command runs the project's Kedro pipelines: results in data/, "
                    "runs in MLflow (make mlflow-ui). " + PARAMS_HELP)
def cli() -> None:
    """tirl: tool-integrated reasoning agents trained with RL (PRS rewards, VSPO)."""


@cli.command(epilog="Example: tirl train --model my_hf_model --questions nq.jsonl "
                    "--corpus wiki.jsonl --algo grpo --reward binary rl.train.steps=50")
@click.option("--model", default=None, metavar="M",
              help="model_init.model: builtin (default), scratch, a local HF folder or .gguf "
                   "file, or an alias such as smollm2-135m-instruct.")
@_questions
@_corpus
@click.option("--algo", type=click.Choice(ALGOS), default="vspo", show_default=True,
              help="RL algorithm.")
@click.option("--reward", type=click.Choice(REWARDS), default="prs", show_default=True,
              help="prs (progressive reward shaping) or binary 0/1.")
@_env
@_overrides
def train(model: str | None, questions: str | None, corpus: str | None, algo: str,
          reward: str, env: str | None, overrides: tuple[str, ...]) -> None:
    """Data prep, SFT, RL with ALGO and REWARD, and evaluation against SFT (one chain)."""
    from tirl.variants import VARIANTS

    variant = f"{algo}_{reward}"
    if variant not in VARIANTS:
        raise click.UsageError(f"--algo {algo} --reward {reward}: no such variant (the "
                               f"variants: {', '.join(VARIANTS)})")
    _run_chain(variant, env, overrides, questions, corpus, model)


@cli.command(name="eval", epilog="Example: tirl eval --model data/06_models/rl/vspo_prs/seed0 "
                                 "--questions nq.jsonl")
@click.option("--model", required=True, metavar="M",
              help="The model to evaluate as is: a local HF folder (e.g. a checkpoint in "
                   "data/06_models), a .gguf file, builtin or an alias.")
@_questions
@_corpus
@_env
@_overrides
def eval_(model: str, questions: str | None, corpus: str | None, env: str | None,
          overrides: tuple[str, ...]) -> None:
    """Evaluate a model without training it (the direct_inference chain)."""
    _run_chain("direct_inference", env, overrides, questions, corpus, model)


@cli.command(epilog="Example: tirl compare --env study")
@_env
@_overrides
def compare(env: str | None, overrides: tuple[str, ...]) -> None:
    """Every variant from one shared SFT checkpoint, the untrained base, and the report."""
    _run_chain("compare", env, overrides, None, None, None)


@cli.command()
@_env
def report(env: str | None) -> None:
    """Rebuild the comparison report from the evaluations already on disk (no training)."""
    _run_chain("report", env, (), None, None, None)


@cli.command()
@click.argument("prefix", required=False, default="")
@_env
def params(prefix: str, env: str | None) -> None:
    """Print the resolved parameters (all of them, or those under PREFIX) as YAML."""
    import yaml

    values: Any = _project(env).parameters()
    for part in [p for p in prefix.split(".") if p]:
        if not isinstance(values, Mapping) or part not in values:
            raise click.UsageError(f"no parameter {prefix!r} (known at this level: "
                                   f"{sorted(values) if isinstance(values, Mapping) else []})")
        values = values[part]
    if prefix:
        for part in reversed([p for p in prefix.split(".") if p]):
            values = {part: values}
    click.echo(yaml.safe_dump(values, sort_keys=False, default_flow_style=False), nl=False)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def run(ctx: click.Context) -> None:
    """kedro run itself, with every Kedro option (tirl run --pipelines=sft --env=test)."""
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    find_project(Path.cwd())
    package = Path(__file__).parent.name
    configure_project(package)
    find_run_command(package)(args=ctx.args, standalone_mode=False)


def _run_chain(pipeline: str, env: str | None, overrides: Sequence[str],
               questions: str | None, corpus: str | None, model: str | None) -> None:
    from tirl.experiments import deep_merge

    runtime = deep_merge(parse_overrides(overrides), data_overrides(questions, corpus, model))
    project = _project(env)
    runtime = with_user_split(project.parameters(runtime), runtime)
    project.run(pipeline, runtime)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="tirl",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except ConfigError as exc:  # a bad key or value, named: no traceback needed
        click.echo(f"tirl: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
