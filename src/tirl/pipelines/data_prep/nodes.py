"""data_prep nodes: thin adapters from parameters and catalog objects to tirl.core.

Order of the stage (pipeline.py): load or generate the sources -> validate questions and
corpus -> build gold trajectories -> validate them (the report is a catalog output, saved
whatever the result) -> publish. Practice chats (other generated worlds, for the warm start)
are built and checked on the side and also leave through ``publish``. Only ``publish``
returns the tables that the catalog writes to data/03_primary, and it raises when validation
failed, so a failed run leaves earlier outputs untouched and still saves the report that says
why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.config import build_config, field_
from tirl.core.data import gold as G
from tirl.core.data import loaders as L
from tirl.core.data import validation as V
from tirl.core.tools.search import build_search_tool, search_settings
from tirl.core.types import GOLD_COLUMNS, PASSAGE_COLUMNS, QUESTION_COLUMNS, SPLITS
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import generate_world
from tirl.core.world.practice import practice_seeds, practice_trajectories

log = logging.getLogger(__name__)

SOURCES = ("world", "flashrag")
CORPUS_SOURCES = ("world", "flashrag", "wiki")


@dataclass(frozen=True)
class FlashragConfig:
    questions_path: str | None = field_(None, doc="FlashRAG/Search-R1 QA JSONL file")
    corpus_path: str | None = field_(None, doc="FlashRAG corpus JSONL (id, contents)")
    split: str = field_("test", doc="split label given to the file's questions", choices=SPLITS)
    keep_world_questions: bool = field_(
        True, doc="also keep the world's questions (its train/val feed SFT and RL)")


@dataclass(frozen=True)
class WikiConfig:
    path: str | None = field_(None, doc="summaries JSON; null: the installed package's file")
    lang: str = field_("en-us", doc="language of the package's data file")
    max_passages: int | None = field_(None, doc="keep the first N articles by title", ge=1)


@dataclass(frozen=True)
class GoldConfig:
    splits: list[str] = field_(default_factory=lambda: ["train", "val"],
                               doc="splits that get gold trajectories (searched with params:agent)")

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad:
            raise ValueError(f"gold.splits: {bad} not in {list(SPLITS)}")


@dataclass(frozen=True)
class PracticeConfig:
    worlds: int = field_(0, doc="extra generated worlds whose gold chats feed the warm start only",
                         ge=0)
    first_seed: int = field_(1000, doc="seed of the first practice world (then +1, +2, ...)")
    splits: list[str] = field_(default_factory=lambda: ["train"],
                               doc="question splits of each practice world that get chats")

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad:
            raise ValueError(f"practice.splits: {bad} not in {list(SPLITS)}")


@dataclass(frozen=True)
class ValidationConfig:
    questions: list[dict[str, Any]] = field_(doc="GX suite for the question table")
    corpus: list[dict[str, Any]] = field_(doc="GX suite for the corpus")
    gold: list[dict[str, Any]] = field_(doc="GX suite for the gold trajectories")
    max_examples: int = field_(5, doc="offending rows listed per failed expectation", ge=1)


@dataclass(frozen=True)
class DataPrepConfig:
    validation: ValidationConfig = field_(doc="expectation suites (see docs/data.md)")
    source: str = field_("world", doc="where questions come from", choices=SOURCES)
    corpus: str = field_("auto", doc="corpus sources joined with '+', or 'auto'")
    world: WorldConfig = field_(default_factory=WorldConfig, doc="built-in world")
    flashrag: FlashragConfig = field_(default_factory=FlashragConfig, doc="user QA file")
    wiki: WikiConfig = field_(default_factory=WikiConfig, doc="Wikipedia corpus")
    gold: GoldConfig = field_(default_factory=GoldConfig, doc="gold trajectories")
    practice: PracticeConfig = field_(default_factory=PracticeConfig,
                                      doc="practice worlds for the warm start")

    def __post_init__(self) -> None:
        if self.source == "flashrag" and not self.flashrag.questions_path:
            raise ValueError("source is 'flashrag' but flashrag.questions_path is not set")
        for part in self.corpus_sources:
            if part not in CORPUS_SOURCES:
                raise ValueError(f"corpus: {part!r} is not one of {list(CORPUS_SOURCES)} "
                                 "(join several with '+', e.g. 'world+wiki')")
        if "flashrag" in self.corpus_sources and not self.flashrag.corpus_path:
            raise ValueError("corpus includes 'flashrag' but flashrag.corpus_path is not set")
        try:
            practice_seeds(self.practice.first_seed, self.practice.worlds, self.world.seed)
        except ValueError as exc:
            raise ValueError(f"practice.first_seed: {exc}") from None

    @property
    def corpus_sources(self) -> tuple[str, ...]:
        if self.corpus == "auto":
            if self.source == "flashrag" and self.flashrag.corpus_path:
                return ("flashrag",)
            return ("world",)
        return tuple(p.strip() for p in self.corpus.split("+"))

    @property
    def needs_world(self) -> bool:
        return (self.source == "world" or "world" in self.corpus_sources
                or self.flashrag.keep_world_questions)


def build_data_prep_config(params: dict[str, Any]) -> DataPrepConfig:
    return build_config(DataPrepConfig, params, "data_prep")


# --- nodes ---------------------------------------------------------------------------------


def load_sources(params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Generate the world and/or read the user's files -> (questions, corpus, world kb)."""
    cfg = build_data_prep_config(params)
    world = generate_world(cfg.world) if cfg.needs_world else None
    kb = world.kb if world is not None else {"seed": None, "entities": [], "plans": {},
                                             "heldout_entities": []}
    parts = []
    if cfg.source == "world" or cfg.flashrag.keep_world_questions:
        parts.append(world.questions)
    if cfg.source == "flashrag":
        parts.append(L.load_flashrag_questions(cfg.flashrag.questions_path,
                                               split=cfg.flashrag.split))
    questions = L.concat_tables(parts)  # keeps each row's file line for validation messages

    corpora = []
    for part in cfg.corpus_sources:
        if part == "world":
            corpora.append(world.corpus)
        elif part == "flashrag":
            corpora.append(L.load_flashrag_corpus(cfg.flashrag.corpus_path))
        else:
            corpora.append(L.load_wiki_corpus(cfg.wiki.path, lang=cfg.wiki.lang,
                                              max_passages=cfg.wiki.max_passages))
    corpus = L.concat_tables(corpora)
    return (questions[list(QUESTION_COLUMNS)], corpus[list(PASSAGE_COLUMNS)], kb)


def validate_sources(questions: pd.DataFrame, corpus: pd.DataFrame,
                     params: dict[str, Any]) -> dict[str, Any]:
    """GX-validate the question table and the corpus (report only; never raises on data)."""
    cfg = build_data_prep_config(params)
    return V.validate_tables({
        "questions": (V.derive_questions(questions), cfg.validation.questions),
        "corpus": (V.derive_corpus(corpus), cfg.validation.corpus),
    }, max_examples=cfg.validation.max_examples)


def build_gold(questions: pd.DataFrame, corpus: pd.DataFrame, world_kb: dict[str, Any],
               source_report: dict[str, Any], params: dict[str, Any],
               search: dict[str, Any]) -> pd.DataFrame:
    """Gold trajectories of the configured splits, searching the corpus with the agent's
    search tool (``params:agent.search``), exactly as the agent will see it.

    Skipped (empty table) when the sources failed validation: the search index would be
    built on broken data and the run stops at ``publish`` anyway.
    """
    cfg = build_data_prep_config(params)
    if not source_report["success"]:
        log.warning("sources failed validation: gold trajectories not built")
        return pd.DataFrame(columns=list(GOLD_COLUMNS))
    search_settings(search)
    tool = build_search_tool(corpus, **search)
    gold = G.searched_gold_trajectories(questions, world_kb.get("plans", {}), tool,
                                        splits=cfg.gold.splits)
    log.info("gold trajectories: %d (answer found by search in %.1f%% of short-form ones)",
             len(gold), 100 * G.answer_coverage(gold, questions) if len(gold) else 0.0)
    return gold


def build_practice(world_kb: dict[str, Any], params: dict[str, Any],
                   search: dict[str, Any]) -> pd.DataFrame:
    """Gold chats of ``practice.worlds`` freshly generated worlds (warm start only).

    Validated here with the gold suite: the chats are generated, not user data, so a failure
    is a bug in the generator and stops the run naming the expectation.
    """
    cfg = build_data_prep_config(params)
    top_k, max_passage_tokens = search_settings(search)
    practice = practice_trajectories(
        cfg.world, worlds=cfg.practice.worlds, first_seed=cfg.practice.first_seed,
        splits=cfg.practice.splits, top_k=top_k, max_passage_tokens=max_passage_tokens,
        avoid_names=[e["name"] for e in world_kb.get("entities", [])])
    if len(practice):
        report = V.validate(V.derive_gold(practice, list(practice["question_id"])),
                            cfg.validation.gold, "practice", max_examples=cfg.validation.max_examples)
        V.raise_if_failed({"success": report["success"], "tables": {"practice": report}})
    return practice.reset_index(drop=True)


def validate_gold(gold: pd.DataFrame, questions: pd.DataFrame, source_report: dict[str, Any],
                  params: dict[str, Any]) -> dict[str, Any]:
    """Validate the gold table and merge its report into the sources' (the saved report)."""
    cfg = build_data_prep_config(params)
    report = {"success": source_report["success"], "tables": dict(source_report["tables"])}
    if source_report["success"]:
        rep = V.validate(V.derive_gold(gold, list(questions["id"])), cfg.validation.gold,
                         "gold", max_examples=cfg.validation.max_examples)
        report["tables"]["gold"] = rep
        report["success"] = rep["success"]
    report["counts"] = {
        "questions": {f"{s}/{t}": int(n) for (s, t), n in
                      questions.groupby(["split", "qtype"]).size().items()},
        "passages": int(source_report["tables"]["corpus"]["n_rows"]),
        "gold_trajectories": int(len(gold)),
    }
    return report


def publish(questions: pd.DataFrame, corpus: pd.DataFrame, gold: pd.DataFrame,
            practice: pd.DataFrame, world_kb: dict[str, Any], report: dict[str, Any]
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Pass the validated tables on to the catalog, or stop the run if validation failed.

    Raises :class:`tirl.core.data.validation.DataValidationError` naming each failed
    expectation and a few offending rows; nothing downstream is then written.
    """
    V.raise_if_failed(report)
    # The file lines the loaders kept for validation messages are not part of the tables.
    return (L.without_origin(questions), L.without_origin(corpus), L.without_origin(gold),
            L.without_origin(practice), world_kb)
