"""model_init: the base model (built-in from scratch, or a pretrained one from disk)."""

from tirl.pipelines.model_init.pipeline import create_pipeline

__all__ = ["create_pipeline"]
