"""The ``prs_scoring`` stage (docs/rewards.md)."""

from tirl.pipelines.prs_scoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
