"""Kedro project settings: the config loader and the project's own hooks.

kedro-mlflow registers itself through its entry point and owns the MLflow run of every
``kedro run``; :class:`tirl.hooks.RunTagsHook` adds lineage tags to that run,
:class:`tirl.hooks.NodeResourcesHook` each node's seconds and peak memory,
:class:`tirl.hooks.SecretsHook` keeps keys out of the parameters (they come from Kedro's
credentials) and :class:`tirl.hooks.RunStatusHook` marks a run killed by a signal KILLED.
:class:`tirl.config_hook.ParamsCheckHook` checks every parameter the run reads before it starts;
:class:`tirl.publish_hook.OutputSetHook` publishes each node's outputs as one set;
:class:`tirl.run_log.RunLogHook` writes plain log lines off a terminal and ends a run with a
summary naming its results and its MLflow run.
"""

from kedro.config import OmegaConfigLoader

from tirl.config_hook import ParamsCheckHook
from tirl.hooks import NodeResourcesHook, RunStatusHook, RunTagsHook, SecretsHook
from tirl.publish_hook import OutputSetHook
from tirl.run_log import RunLogHook

HOOKS = (SecretsHook(), ParamsCheckHook(), OutputSetHook(), RunTagsHook(), NodeResourcesHook(),
         RunStatusHook(), RunLogHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
    # conf/test and conf/local only state what they change; nested keys merge into base.
    "merge_strategy": {"parameters": "soft"},
}
