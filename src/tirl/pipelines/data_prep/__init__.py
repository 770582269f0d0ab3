"""The data_prep stage: built-in world or user data -> validated questions, corpus, gold."""

from tirl.pipelines.data_prep.pipeline import create_pipeline

__all__ = ["create_pipeline"]
