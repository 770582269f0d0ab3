from kedro.pipeline import Pipeline

from tirl.experiments import VARIANTS, configured_seeds, report_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Rebuild the comparison report from the evaluation summaries and RL histories already
    on disk (what ``compare`` ends with; DVC's ``report`` stage runs this alone)."""
    return report_pipeline(VARIANTS, configured_seeds(), with_sft=True, prefix="compare")
