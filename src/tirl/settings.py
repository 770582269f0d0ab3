"""Kedro project settings: the config loader and the project's own hooks.

kedro-mlflow's hook (as :class:`tirl.tracking_hook.TrackingHook`, which logs each parameter once) owns
the MLflow run of every ``kedro run``; :class:`tirl.hooks.RunTagsHook` adds lineage tags to that run,
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
from tirl.tracking_hook import TrackingHook

# kedro-mlflow's hook is registered here, as TrackingHook (each parameter logged once),
# instead of through its entry point. Last in the tuple: pluggy calls the last registered
# first, as it did the plugin's, so the run exists before the other hooks tag it.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)
HOOKS = (SecretsHook(), ParamsCheckHook(), OutputSetHook(), RunTagsHook(), NodeResourcesHook(),
         RunStatusHook(), RunLogHook(), TrackingHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
    # conf/test and conf/local only state what they change; nested keys merge into base.
    # (tirl.variants.project_parameters reads parameters with the same three settings.)
    "merge_strategy": {"parameters": "soft"},
}
