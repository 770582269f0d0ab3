from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model


def create_pipeline(**kwargs) -> Pipeline:
    """Evaluate ``eval_model`` (by default the SFT checkpoint) on every benchmark."""
    return Pipeline([
        node(evaluate_model, ["eval_model", "questions", "corpus", "params:evaluation", "params:agent"],
             ["eval_rows", "eval_summary", "eval_sample", "eval_metrics"], name="evaluate_model",
             tags=["evaluation"]),
    ])
