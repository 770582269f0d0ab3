"""``pretrain``: the built-in base model, trained on a stream of freshly generated worlds."""

from tirl.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
