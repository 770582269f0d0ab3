"""rl: online RL from the SFT warm start (VSPO / GRPO / PPO / CISPO with PRS or 0/1)."""

from tirl.pipelines.rl.pipeline import create_pipeline

__all__ = ["create_pipeline"]
