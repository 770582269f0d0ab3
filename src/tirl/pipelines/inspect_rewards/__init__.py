"""The ``inspect_rewards`` stage (docs/rewards.md)."""

from tirl.pipelines.inspect_rewards.pipeline import create_pipeline

__all__ = ["create_pipeline"]
