"""Options of the built-in world (:class:`WorldConfig`, read by
:func:`tirl.core.world.generator.generate_world`) and the names its parts take: entity
types, splits and question types.
"""

from __future__ import annotations

from dataclasses import dataclass

from tirl.core.config import field_

ENTITY_TYPES = ("country", "city", "university", "person", "company")
IN_DOMAIN_SPLITS = ("train", "val", "test_in_domain")
IN_DOMAIN_QTYPES = ("single_hop", "bridge", "comparison", "description", "multi_question")
OOD_QTYPES = ("composition", "description", "multi_question")
SHORT_QTYPES = ("single_hop", "bridge", "comparison", "composition")
#: Entity types whose members can be held out for the out-of-domain split.
HOLDOUT_TYPES = ("person", "company")
DISTRACTOR_TYPES = ("person", "company", "university", "city")


def _default_questions() -> dict[str, dict[str, int]]:
    short = {"single_hop": 20, "bridge": 20, "comparison": 20, "description": 10,
             "multi_question": 10}
    return {
        "train": {"single_hop": 500, "bridge": 300, "comparison": 400, "description": 60,
                  "multi_question": 80},
        "val": dict(short),
        "test_in_domain": {k: 2 * v for k, v in short.items()},
        "test_ood": {"composition": 80, "description": 20, "multi_question": 20},
    }


@dataclass(frozen=True)
class WorldConfig:
    seed: int = field_(0, doc="seed of the whole world; same seed -> byte-identical outputs")
    n_persons: int = field_(150, doc="real (non-distractor) persons", ge=4)
    n_companies: int = field_(40, doc="real companies", ge=2)
    n_universities: int = field_(12, doc="real universities", ge=1)
    n_cities: int = field_(30, doc="real cities", ge=2)
    n_countries: int = field_(8, doc="countries (each gets a capital among the cities)", ge=1)
    distractor_fraction: float = field_(
        0.5, doc="near-miss-named distractor entities per real person/company/university/city",
        ge=0.0, le=1.0)
    heldout_fraction: float = field_(
        0.15, doc="fraction of persons and companies held out for the test_ood split only",
        ge=0.0, le=0.9)
    facts_per_passage: int = field_(3, doc="facts per passage (an entity gets ceil(n/k) passages)",
                                    ge=1)
    min_year: int = field_(1900, doc="earliest birth year of a person")
    max_year: int = field_(1990, doc="latest birth year of a person")
    questions: dict[str, dict[str, int]] = field_(
        default_factory=_default_questions,
        doc="split -> qtype -> number of questions; in-domain splits take "
            f"{list(IN_DOMAIN_QTYPES)}, test_ood takes {list(OOD_QTYPES)}")

    def __post_init__(self) -> None:
        if self.min_year >= self.max_year:
            raise ValueError(f"min_year ({self.min_year}) must be < max_year ({self.max_year})")
        if self.n_cities < self.n_countries:
            raise ValueError(f"n_cities ({self.n_cities}) must be >= n_countries "
                             f"({self.n_countries}): every country needs a capital")
        for split, counts in self.questions.items():
            allowed = OOD_QTYPES if split == "test_ood" else IN_DOMAIN_QTYPES
            if split not in IN_DOMAIN_SPLITS + ("test_ood",):
                raise ValueError(f"questions.{split}: unknown split (known: "
                                 f"{list(IN_DOMAIN_SPLITS + ('test_ood',))})")
            if not isinstance(counts, dict):
                raise ValueError(f"questions.{split}: expected a mapping qtype -> count")
            for qtype, n in counts.items():
                if qtype not in allowed:
                    raise ValueError(f"questions.{split}.{qtype}: unknown qtype for this split "
                                     f"(known: {list(allowed)})")
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError(f"questions.{split}.{qtype}: expected an integer >= 0, "
                                     f"got {n!r}")
