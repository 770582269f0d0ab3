"""kedro-mlflow's hook, registered by the project (settings.py) with each parameter logged once.

Its own module: importing kedro-mlflow configures Kedro's logging, which :mod:`tirl.hooks`
(imported by scripts and tests outside a Kedro run) must not do.
"""

from __future__ import annotations

from typing import Any

import warnings

from kedro.framework.hooks import hook_impl

with warnings.catch_warnings():
    # kedro-mlflow's import defines MLflow pyfunc models, and MLflow warns at definition
    # time about their type hints: noise at the start of every run, about code not ours.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.pyfunc")
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook


class TrackingHook(MlflowHook):
    """kedro-mlflow's hook (it opens and closes the run of every ``kedro run`` and logs the
    ``params:*`` inputs of each node), registered by the project instead of through the
    plugin's entry point (``DISABLE_HOOKS_FOR_PLUGINS`` in settings), with one change: each
    parameter is logged once, with the value the run used.

    A variant chain's ``variant_params`` node reads the stage defaults ``params:rl`` and
    merges the variant's options over them (``rl_params``). kedro-mlflow would log the
    defaults as ``rl.*`` in the chain's run, so ``kedro run --pipelines=grpo_prs`` showed
    ``rl.train.algorithm = vspo``, and the variant's own values went in beside them under
    other names (``train.algorithm = grpo``). Here those defaults are not logged; the run
    that trains logs the merged values under ``rl.*`` (:func:`tirl.tracking.child_run`).
    """

    #: Nodes whose ``params:rl`` input is only the base of another node's parameters.
    MERGING_NODES = ("variant_params",)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any],
                        is_async: bool) -> None:
        if node.name.rsplit(".", 1)[-1] in self.MERGING_NODES:
            inputs = {k: v for k, v in inputs.items() if k != "params:rl"}
        super().before_node_run(node=node, catalog=catalog, inputs=inputs, is_async=is_async)
