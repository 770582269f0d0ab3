"""sft: warm start the base model on gold trajectories (assistant-only loss)."""

from tirl.pipelines.sft.pipeline import create_pipeline

__all__ = ["create_pipeline"]
