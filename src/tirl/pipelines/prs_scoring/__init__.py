"""The ``prs_scoring`` stage (METHOD.md section 3)."""

from tirl.pipelines.prs_scoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
