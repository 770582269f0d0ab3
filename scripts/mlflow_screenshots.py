"""Screenshots of the MLflow UI for docs/img (headless Chromium, driven by Playwright).

    pip install playwright          # the Python package only: it drives the system Chromium
    python scripts/mlflow_screenshots.py --db mlflow.db --out docs/img

Starts ``mlflow ui`` on the store, opens the experiment's runs table with the headline
``final/*`` columns added, the newest pipeline run (description, parameters, tags), its
charts, and its RL completions table, and writes one PNG of each. Needs a store with at
least one finished ``kedro run`` (``make run``); nothing here is part of the package.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HEADLINE = ("final/exact_match", "final/judge_score", "final/format_valid")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(db: Path):
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{db}",
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow ui did not start on {url}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def newest_run(db: Path, experiment: str, name: str | None):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"{db}: no MLflow experiment {experiment!r}")
    filt = "attributes.status = 'FINISHED' and tags.pipeline != ''"
    if name:
        filt += f" and attributes.run_name = '{name}'"
    runs = mlflow.search_runs([exp.experiment_id], filter_string=filt, output_format="list",
                              order_by=["attributes.start_time DESC"], max_results=50)
    # The pipeline's own run, not one of its children (they carry its tags).
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not runs:
        raise SystemExit(f"{db}: no finished pipeline run{' named ' + name if name else ''}")
    return exp.experiment_id, runs[0]


def shoot(url: str, exp_id: str, run_id: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        def snap(name: str) -> None:
            page.wait_for_timeout(6000)
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            written.append(path)

        # The runs table, with the headline columns picked from "Columns".
        page.goto(f"{url}/#/experiments/{exp_id}/runs")
        page.wait_for_load_state("domcontentloaded")
        page.wait_for_timeout(4000)
        with contextlib.suppress(Exception):  # the assistant panel covers a third of the page
            page.locator("button[aria-label='Close']").first.click(timeout=3000)
        with contextlib.suppress(Exception):
            page.get_by_role("button", name="Columns").click(timeout=10000)
            page.get_by_placeholder("Search").last.fill("final/")
            page.wait_for_timeout(1000)
            # the group's checkbox: every final/* metric at once
            page.get_by_text("Metrics (", exact=False).last.click(timeout=5000)
            page.keyboard.press("Escape")
        with contextlib.suppress(Exception):  # expand the nested child runs
            page.get_by_role("button", name="Expand all").click(timeout=3000)
        snap("mlflow_runs")
        # The run: description, parameters, tags, headline metrics.
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}")
        page.wait_for_load_state("domcontentloaded")
        with contextlib.suppress(Exception):  # the page is a skeleton until the run loads
            page.get_by_text("Description").first.wait_for(timeout=30000)
        snap("mlflow_run_overview")
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}/model-metrics")
        page.wait_for_load_state("domcontentloaded")
        with contextlib.suppress(Exception):
            page.get_by_placeholder("Search metric charts").fill("rl/reward", timeout=5000)
        snap("mlflow_run_rl_charts")
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}/artifacts/rl/completions.json")
        page.wait_for_load_state("domcontentloaded")
        snap("mlflow_completions")
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"))
    parser.add_argument("--experiment", default="tirl")
    parser.add_argument("--run-name", default=None, help="default: the newest pipeline run")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    exp_id, run = newest_run(args.db.resolve(), args.experiment, args.run_name)
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(args.db.resolve()) as url:
        for path in shoot(url, exp_id, run.info.run_id, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
