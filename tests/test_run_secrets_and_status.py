"""A planted API key never reaches MLflow, the outputs or the console; a killed or failed run
is never left RUNNING (issue 15, items 3 and 8).

The real ``kedro run --pipelines=inspect_rewards`` (no model: it scores trajectories written
here) in a scratch copy of the project, with the ``openai`` judge pointed at a fake
chat-completions server on loopback. Everything the run wrote (the MLflow SQLite store, the
artifact folder, ``data/``) and everything it printed is searched for the key. Each
``kedro run`` costs tens of seconds, so the default suite runs three of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tirl.core.types import Trajectory
from tirl.datasets.trajectories import TrajectoryDataset

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
REF = "Alvar Quen was born in Mirebrook and works as a blacksmith."
MATCH = '{"score": 9, "verdict": "Match", "rationale": "states the reference facts"}'


class FakeJudgeServer:
    """POST /v1/chat/completions. ``mode``: "match" (a Match verdict), "echo" (HTTP 400 whose
    body echoes the request's Authorization header, as some proxies do) or "hang" (answers
    only once released)."""

    def __init__(self) -> None:
        self.mode = "match"
        self.auth: list[str | None] = []
        self.arrived, self.release = threading.Event(), threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                auth = self.headers.get("Authorization")
                server.auth.append(auth)
                server.arrived.set()
                if server.mode == "hang":
                    server.release.wait(60)
                if server.mode == "echo":
                    body = json.dumps({"error": f"invalid header Authorization: {auth}"})
                    return self._send(400, body.encode())
                body = {"choices": [{"message": {"role": "assistant", "content": MATCH}}]}
                return self._send(200, json.dumps(body).encode())

            def _send(self, code, data):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self, mode: str) -> None:
        self.mode, self.auth = mode, []
        self.arrived.clear()
        self.release.clear()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()


def _traj(qid: str, idx: int, answer: str) -> Trajectory:
    return Trajectory(
        question_id=qid, sample_idx=idx, prompt_len=3, token_ids=[1, 2, 3, 4, 5],
        mask=[0, 0, 0, 1, 1], logprobs=[0.0, 0.0, 0.0, -0.5, -0.25],
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        turns=[{"role": "assistant", "start": 3, "end": 5, "parse_errors": []}],
        tool_calls=[], answer=answer, finish_reason="answer", parse_errors=[])


@pytest.fixture(scope="module")
def server():
    s = FakeJudgeServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """conf (no conf/local), pyproject and the inputs of inspect_rewards: two long-form
    questions and one answered trajectory for each."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    (root / "data" / "03_primary").mkdir(parents=True)
    pd.DataFrame([
        {"id": f"l{i}", "question": "Describe Alvar Quen.", "answers": [REF], "split": "train",
         "task": "long", "qtype": "description", "source": "world",
         "facts": ["Alvar Quen was born in Mirebrook.", "Alvar Quen works as a blacksmith."]}
        for i in range(2)]).to_parquet(root / "data" / "03_primary" / "questions.parquet")
    TrajectoryDataset(filepath=str(root / "data/07_model_output/inspect_rollouts/trajectories.parquet")
                      ).save([_traj("l0", 0, REF), _traj("l1", 0, "Alvar Quen is a blacksmith.")])
    return root


def _configure(project: Path, server: FakeJudgeServer, *, credentials_yml: dict | None = None,
               **options) -> None:
    judge = {"name": "openai", "options": {"base_url": server.base_url, "model": "judge",
                                           "max_retries": 0, "timeout_s": 20,
                                           "max_concurrency": 1, **options}}
    local = project / "conf" / "local"
    (local / "parameters_rl.yml").write_text(yaml.safe_dump({"rl": {"train": {"judge": judge}}}))
    creds = local / "credentials.yml"
    if credentials_yml is None:
        creds.unlink(missing_ok=True)
    else:
        creds.write_text(yaml.safe_dump(credentials_yml))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "OPENAI_API_KEY")}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _kedro(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([KEDRO, "run", "--pipelines=inspect_rewards", *args], cwd=project,
                          env=_env(**env), capture_output=True, text=True, timeout=900)


def _places_holding(project: Path, needle: str, printed: str) -> list[str]:
    """Every file under the project (MLflow store, artifacts, data, logs) and the console
    output that contains ``needle``; conf/local holds it on purpose and is skipped."""
    hits = [str(p.relative_to(project)) for p in project.rglob("*")
            if p.is_file() and "conf" not in p.relative_to(project).parts[:1]
            and needle.encode() in p.read_bytes()]
    return hits + (["console"] if needle in printed else [])


def _latest_run(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tirl"], output_format="list",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def test_key_from_kedro_credentials_is_used_and_never_stored(project, server):
    key = "sk-planted-CREDENTIALS-7f3a9c21e5"
    server.reset("match")
    _configure(project, server, credentials_yml={"openai_judge": {"api_key": key}},
               credentials="openai_judge")
    proc = _kedro(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert server.auth and all(a == f"Bearer {key}" for a in server.auth)  # the key was used
    stats = json.loads((project / "data/08_reporting/inspect_rewards/stats.json").read_text())
    assert stats["count"] == 2
    assert _places_holding(project, key, proc.stdout + proc.stderr) == []
    run = _latest_run(project)
    assert run.info.status == "FINISHED"
    assert run.data.params["rl.train.judge.options.credentials"] == "openai_judge"


def test_key_echoed_by_the_server_is_redacted_and_the_run_fails(project, server):
    key = "sk-planted-ENVIRON-0b8e44d1c9"
    server.reset("echo")
    _configure(project, server)
    proc = _kedro(project, OPENAI_API_KEY=key)
    printed = proc.stdout + proc.stderr
    assert proc.returncode != 0 and server.auth == [f"Bearer {key}"]
    assert "HTTP 400" in printed and "Bearer ***" in printed  # the error is shown, redacted
    assert _places_holding(project, key, printed) == []
    run = _latest_run(project)
    assert run.info.status == "FAILED"  # the on_pipeline_error path


@pytest.mark.slow  # the refusal itself: tests/test_hooks.py (SecretsHook), in the default suite
def test_key_in_the_parameters_is_refused_before_anything_is_written(project, server):
    key = "sk-planted-PARAMS-c4d2e9a7b1"
    server.reset("match")
    _configure(project, server)
    before = _latest_run(project)
    proc = _kedro(project, f"--params=rl.train.judge.options.credentials.api_key={key}")
    printed = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not server.auth
    assert "rl.train.judge.options.credentials" in printed and "credentials.yml" in printed
    assert _places_holding(project, key, printed) == []
    after = _latest_run(project)  # no MLflow run was even started
    assert (after and after.info.run_id) == (before and before.info.run_id)


# SIGINT in a subprocess is slow-only: tests/test_hooks.py sends it in process, by default.
@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_run_killed_by_a_signal_is_marked_killed(project, server, signum):
    server.reset("hang")
    _configure(project, server)
    proc = subprocess.Popen([KEDRO, "run", "--pipelines=inspect_rewards"], cwd=project,
                            env=_env(OPENAI_API_KEY="sk-unused-0123456789"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900  # a loaded 2-core machine takes minutes to get there
        while not server.arrived.wait(1):
            assert proc.poll() is None, f"exited before the judge: {proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the judge"
        proc.send_signal(signum)
        time.sleep(0.5)
        server.release.set()  # SIGINT unwinds: let the request in flight end
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out[-3000:]
    run = _latest_run(project)
    assert run.info.status == "KILLED", out[-3000:]
