"""The `inspect_rollouts` stage: roll a model out on questions and look at what it does."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
