"""Shared fixtures: a tiny locally-built tokenizer and model (no hub, about a second).

``tiny_tokenizer``/``tiny_model``/``tiny_model_dir`` are session-scoped and shared by every
test: do not train or mutate ``tiny_model`` in place; take ``fresh_tiny_model`` (a deep copy)
or load your own from ``tiny_model_dir``.
"""

from __future__ import annotations

import copy
import os

# Before anything imports transformers/huggingface_hub: tests never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402

TINY_QUESTIONS = [
    ("Where was Alice Marlow born?", "Alice Marlow", "Alice Marlow was born in Norvale in 1931.", "Norvale"),
    ("Who founded Kestrel Works?", "Kestrel Works", "Kestrel Works was founded by Brin Adler in 1902.", "Brin Adler"),
    ("What is the capital of Ostmark?", "Ostmark", "The capital of Ostmark is Velden, a river city.", "Velden"),
    ("When did the Tarn Bridge open?", "Tarn Bridge", "The Tarn Bridge opened in 1888 over the Tarn river.", "1888"),
]


def tiny_gold_chats() -> list[list[dict[str, str]]]:
    """A few gold trajectories in the protocol (system, user, tool call, tool, answer)."""
    from tirl.core.agent import protocol as P

    chats = []
    for question, title, text, answer in TINY_QUESTIONS:
        chats.append(P.initial_messages(question) + [
            {"role": "assistant", "content": P.format_think(f"I need to search for {title}.") + "\n"
             + P.format_tool_call("search", {"query": title})},
            {"role": "tool", "content": f"Doc 1 (Title: {title}) {text}"},
            {"role": "assistant", "content": P.format_answer(answer)},
        ])
    return chats


def tiny_texts() -> list[str]:
    """Texts a tiny tokenizer is trained on: passages, questions and rendered protocol text."""
    from tirl.core.agent import protocol as P

    texts = [P.SYSTEM_PROMPT, P.format_tool_call("search", {"query": "example"})]
    for question, title, text, answer in TINY_QUESTIONS:
        texts += [question, f"Doc 1 (Title: {title}) {text}", answer]
    import json
    texts.append(json.dumps(P.SEARCH_TOOL_SCHEMAS))
    return texts * 3


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """Byte-level BPE (~500 tokens) with template tokens, protocol tags and the chat template."""
    from tirl.core.modeling.factory import train_tokenizer

    return train_tokenizer(tiny_texts(), vocab_size=500)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A from-scratch Llama (d=64, 2 layers, ~0.13M params), random weights, eval mode. Shared:
    never train it in place."""
    from tirl.core.modeling.factory import ModelConfig, build_model

    model = build_model(tiny_tokenizer, ModelConfig(d_model=64, n_layers=2, n_heads=4, max_len=2048))
    return model.eval()


@pytest.fixture
def fresh_tiny_model(tiny_model):
    """A private copy of ``tiny_model`` that a test may train or mutate."""
    return copy.deepcopy(tiny_model)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A directory with ``tiny_model`` + ``tiny_tokenizer`` saved by ``save_pretrained``; load it
    with ``AutoModelForCausalLM``/``AutoTokenizer`` or ``tirl.core.modeling.factory.load_model``."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gold():
    """Gold chats (lists of messages) matching the tiny tokenizer's training text."""
    return tiny_gold_chats()


@pytest.fixture
def tiny_tables():
    """``(corpus, questions, gold_trajectories)`` DataFrames in the catalog schemas
    (PASSAGE_COLUMNS, QUESTION_COLUMNS, GOLD_COLUMNS; messages as JSON strings)."""
    import json

    import pandas as pd

    n = len(TINY_QUESTIONS)
    corpus = pd.DataFrame({"id": [f"p{i}" for i in range(n)],
                           "title": [q[1] for q in TINY_QUESTIONS], "text": [q[2] for q in TINY_QUESTIONS]})
    questions = pd.DataFrame({
        "id": [f"q{i}" for i in range(n)], "question": [q[0] for q in TINY_QUESTIONS],
        "answers": [[q[3]] for q in TINY_QUESTIONS], "split": ["train"] * n, "task": ["short"] * n,
        "qtype": ["single_hop"] * n, "facts": [[] for _ in range(n)], "source": ["world"] * n})
    gold = pd.DataFrame({"id": [f"g{i}" for i in range(n)], "question_id": list(questions["id"]),
                         "messages": [json.dumps(c) for c in tiny_gold_chats()]})
    return corpus, questions, gold


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread per test: the suite runs as two xdist workers on two cores, and
    oversubscribed BLAS threads make every test slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _isolated_mlflow(tmp_path_factory):
    """Tests never write to the project's MLflow store: saving through an
    ``MlflowArtifactDataset`` outside a run makes MLflow start one on its own."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # Creating the store here gives its Default experiment an artifact folder in the temp dir;
    # made by a client instead, it would be ./mlruns/0 of the working directory (the
    # project), where runs that tests start implicitly would leave folders with no DB row.
    SqlAlchemyStore(uri, str(root / "artifacts"))
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    patch.undo()


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_run():
    """A run that a test left active (see above) would leak into the next test, and so
    would the experiment a test set: ``mlflow.set_experiment`` keeps its id in a module
    global and in ``MLFLOW_EXPERIMENT_ID``, and the next test's store has no such id
    ("No Experiment with id=1 exists"). MLflow has no public call that unsets it."""
    yield
    import os

    import mlflow
    from mlflow.tracking import fluent

    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store in ``tmp_path`` (the working directory) with experiment
    ``t`` set, for tests that read back what they logged."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("t")
    yield
    while mlflow.active_run():
        mlflow.end_run()


def read_conf_params(stage: str, env: str = "test") -> dict:
    """``<stage>`` parameters as ``kedro run --env=<env>`` reads them: the env's file
    replaces the top-level key of conf/base's when it has one."""
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf"
    for where in ([env, "base"] if env != "base" else ["base"]):
        path = conf / where / f"parameters_{stage}.yml"
        if path.is_file():
            return yaml.safe_load(path.read_text())[stage]
    raise FileNotFoundError(f"no parameters_{stage}.yml in conf/{env} or conf/base")


@pytest.fixture
def agent_params() -> dict:
    """``params:agent`` of the test environment (tiny budgets)."""
    return read_conf_params("agent")


@pytest.fixture
def conf_params():
    """``conf_params(stage, env="test")``: a stage's parameters as ``--env`` reads them."""
    return read_conf_params
