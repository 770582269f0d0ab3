"""Judge registry and the rubric judge: fact parsing, hand-worked scores, invariants."""

from __future__ import annotations

import doctest
import math
import sys
import types

import pytest

import tirl.core.rewards.facts as facts_mod
import tirl.core.rewards.judges as judges_mod
import tirl.core.rewards.rubric as rubric_mod
from tirl.core.config import ConfigError
from tirl.core.rewards.judges import JUDGES, RubricJudge, make_judge, parse_fact
from tirl.core.world.config import WorldConfig

Q = "Describe Alvar Quen."
FACTS = ["Alvar Quen was born in Mirebrook.", "Alvar Quen works as a blacksmith."]
REF = "Alvar Quen was born in Mirebrook and works as a blacksmith."


def verdict(answer: str, judge: RubricJudge | None = None, facts=FACTS, ref=REF):
    return (judge or RubricJudge()).judge(question=Q, reference=ref, answer=answer, facts=facts)


@pytest.mark.parametrize("module", [judges_mod, rubric_mod, facts_mod])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("fact, subject, value, kinds, cue, copula", [
    ("Alvar Quen was born in Mirebrook.", {"alvar", "quen"}, "mirebrook",
     {"born_in", "birth_year"}, set(), False),
    ("Mirebrook lies in the Kesh Valley.", {"mirebrook"}, "kesh valley", {"located_in"}, set(),
     False),
    ("Alvar Quen was born in the year 1843.", {"alvar", "quen"}, "1843", {"birth_year"}, set(),
     False),
    ("Alvar Quen works as a blacksmith.", {"alvar", "quen"}, "blacksmith", {"occupation"},
     set(), True),  # an occupation may also be worded "X is a blacksmith"
    ("Alvar Quen is a blacksmith.", {"alvar", "quen"}, "blacksmith", set(), set(), True),
    ("The population of Tarsk is 12,400.", {"tarsk"}, "12400", set(), {"population"}, False),
    ("Alvar Quen | born_in | Mirebrook", {"alvar", "quen"}, "mirebrook", {"born_in"}, set(),
     False),
    ("Alvar Quen | member_of | the Iron Guild", {"alvar", "quen"}, "iron guild", {"member_of"},
     set(), False),
    ("Alvar Quen | plays | the lute", {"alvar", "quen"}, "lute", set(), {"plays"}, False),
])
def test_parse_fact(fact: str, subject: set, value: str, kinds: set, cue: set,
                    copula: bool) -> None:
    parsed = parse_fact(fact)
    assert parsed.subject == frozenset(subject) and " ".join(parsed.value) == value
    assert parsed.kinds == frozenset(kinds) and parsed.cue == frozenset(cue)
    assert parsed.copula is copula


def test_hand_worked_partial_coverage() -> None:
    # one of two facts, nothing invented, no repetition, short: score = 1/2
    v = verdict("Alvar Quen was born in Mirebrook.")
    assert v.score == pytest.approx(0.5) and not v.match
    assert "covered 1/2" in v.rationale


def test_hand_worked_invented_words() -> None:
    # content words: alvar quen born mirebrook works blacksmith tall -> 1 of 7 invented
    v = verdict("Alvar Quen was born in Mirebrook and works as a tall blacksmith.")
    assert v.score == pytest.approx(1 - 1 / 7)


def test_contradiction_is_penalised_beyond_missing() -> None:
    missing = verdict("Alvar Quen works as a blacksmith.")
    wrong = verdict("Alvar Quen works as a blacksmith and was born in Tarsk.")
    assert missing.score == pytest.approx(0.5)
    assert "contradicted 1/2" in wrong.rationale
    assert wrong.score < missing.score


@pytest.mark.parametrize("answer, score", [
    ("Alvar Quen was not born in Mirebrook and works as a blacksmith.", 0.0),  # 1 - 1, of 2
    ("Alvar Quen isn't a blacksmith and was born in Mirebrook.", 0.0),
    ("Born in Mirebrook.", 0.0),  # no subject: states nothing
    ("He was born in Mirebrook.", 0.5),  # a pronoun names the subject
    ("Alvar Quen's birthplace is Mirebrook.", 0.5),  # possessive; the reference's noun
    ("Alvar Quen is a blacksmith, born in Mirebrook.", 1.0),
    ("Alvar Quen, a blacksmith, was born in Mirebrook.", 1.0),  # an apposition
    ("Alvar Quen: blacksmith, Mirebrook.", 0.0),  # a list is no apposition
    ("Alvar Quen works as a Mirebrook.", 0.0),  # a value in another slot: contradicted
    ("Mirebrook, blacksmith.", 0.0),  # the bare values
    ("Alvar Quen born in blacksmith works as Mirebrook", 0.0),  # swapped inside one clause
    ("Alvar Quen was born in Mirebrook or Tarsk and works as a blacksmith.", 0.0),  # a hedge
])
def test_facts_are_checked_as_facts(answer: str, score: float) -> None:
    assert verdict(answer).score == pytest.approx(score)


def test_relation_and_negation_words_inside_names_are_names() -> None:
    facts = ["Alvar Quen works for No Capital Works.", "The population of Tarsk is 12,400."]
    ref = " ".join(facts)
    assert verdict(ref, facts=facts, ref=ref).score == 1.0
    assert verdict("Tarsk has a population of 12,400, and Alvar Quen is employed by No Capital "
                   "Works.", facts=facts, ref=ref).score == 1.0


def test_every_corpus_wording_states_its_canonical_fact() -> None:
    templates = pytest.importorskip("tirl.core.world.templates")
    values = {"text": "blacksmith", "city": "Mirebrook", "year": "1843", "company": "Iron Works",
              "university": "Kesh University", "person": "Brin Adler", "country": "Velmark"}
    judge = RubricJudge()
    for (_, rel), otype in templates.RELATIONS.items():
        name, value = "Alvar Quen", values[otype]
        fact = templates.sentence(templates.SENTENCES[rel][0], name, value)
        for wording in templates.SENTENCES[rel]:
            answer = templates.sentence(wording, name, value)
            v = judge.judge(question=f"Describe {name}.", reference=fact, answer=answer,
                            facts=[fact])
            assert v.score == 1.0, (answer, fact, v.rationale)


def test_empty_answer_and_fact_free_reference() -> None:
    assert verdict("").score == 0.0 and not verdict("").match
    # no atomic facts: each reference sentence is one fact (value = its last value phrase)
    ref = "Alvar Quen was born in Mirebrook. He works as a blacksmith."
    assert verdict(ref, facts=(), ref=ref).score == 1.0
    assert verdict("He works as a blacksmith.", facts=(), ref=ref).score == pytest.approx(0.5)


def test_length_factor_hand_worked() -> None:
    # reference 9 normalised tokens; the reference repeated 3 times (27 tokens): length
    # factor exp(1 - 27 / 18) = e^-0.5, repetition = 1 - 9 unique / 25 trigrams... the
    # score is at most the length factor whatever the penalties.
    v = verdict(" ".join([REF] * 3))
    assert v.score <= math.exp(-0.5) + 1e-12


def test_threshold_and_weights_are_real_options() -> None:
    answer = "Alvar Quen was born in Mirebrook."  # score 0.5
    assert make_judge("rubric", threshold=0.5).judge(question=Q, reference=REF, answer=answer,
                                                     facts=FACTS).match
    lenient = make_judge("rubric", w_invented=0.0)
    invented = "Alvar Quen was born in Mirebrook and works as a tall blacksmith."
    assert lenient.judge(question=Q, reference=REF, answer=invented, facts=FACTS).score == 1.0


def test_deterministic_and_cached() -> None:
    judge = RubricJudge()
    first = verdict("Alvar Quen was born in Mirebrook.", judge)
    second = verdict("Alvar Quen was born in Mirebrook.", judge)
    assert first == second
    assert judge.cache_info().hits == 1
    uncached = RubricJudge(cache_size=0)
    assert verdict("Alvar Quen was born in Mirebrook.", uncached) == first


def test_scores_in_unit_interval() -> None:
    for answer in ["x", REF, REF * 5, "Tarsk Tarsk Tarsk", Q, "born born born born"]:
        v = verdict(answer)
        assert 0.0 <= v.score <= 1.0 and v.match == (v.score >= 0.7)


def test_registry_unknown_name_and_bad_option() -> None:
    assert {"rubric", "openai", "transformers"} <= set(JUDGES)
    with pytest.raises(ValueError, match="rubric"):
        make_judge("gpt")
    with pytest.raises(ConfigError, match="judge.options.treshold"):
        make_judge("rubric", treshold=0.5)


@pytest.mark.parametrize("name, cls", [("openai", "OpenAIJudge"),
                                       ("transformers", "TransformersJudge")])
def test_llm_judges_are_built_by_lazy_import(name: str, cls: str, monkeypatch) -> None:
    # A stand-in llm_judge module: the registry must import it only when asked and pass the
    # options through unchanged.
    fake = types.ModuleType("tirl.core.rewards.llm_judge")

    class Stub:
        def __init__(self, **options):
            self.options = options

    setattr(fake, cls, Stub)
    monkeypatch.setitem(sys.modules, "tirl.core.rewards.llm_judge", fake)
    judge = make_judge(name, model="m", timeout_s=3)
    assert isinstance(judge, Stub) and judge.options == {"model": "m", "timeout_s": 3}


def test_llm_judge_missing_class_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tirl.core.rewards.llm_judge",
                        types.ModuleType("tirl.core.rewards.llm_judge"))
    with pytest.raises(ImportError, match="OpenAIJudge"):
        make_judge("openai")


# --- on the built-in world's own long-form questions (facts written by the generator) ------


@pytest.fixture(scope="module")
def world():
    generator = pytest.importorskip("tirl.core.world.generator")
    return generator.generate_world(WorldConfig())


@pytest.fixture(scope="module")
def world_long_questions(world) -> list[dict]:
    records = (world.questions.to_dict("records") if hasattr(world.questions, "to_dict")
               else list(world.questions))
    long = [r for r in records if r["task"] == "long"]
    assert long, "the world generator produced no long-form questions"
    return long


def test_world_references_match_and_other_entities_do_not(world_long_questions) -> None:
    judge = RubricJudge()
    n = len(world_long_questions)
    for i, q in enumerate(world_long_questions):
        ref, facts = q["answers"][0], list(q["facts"])
        own = judge.judge(question=q["question"], reference=ref, answer=ref, facts=facts)
        assert own.score == 1.0 and own.match, (q["question"], own.rationale)
        sentences = [s.strip() for s in ref.split(". ") if s.strip()]
        shuffled = ". ".join(reversed(sentences))
        assert judge.judge(question=q["question"], reference=ref, answer=shuffled,
                           facts=facts).score == 1.0
        other = world_long_questions[(i + n // 2) % n]
        if other["answers"][0] != ref:
            wrong = judge.judge(question=q["question"], reference=ref,
                                answer=other["answers"][0], facts=facts)
            assert not wrong.match, (q["question"], other["answers"][0], wrong.rationale)


# --- honest and false answers on the built-in world (issue 15: facts checked as facts) -----


@pytest.fixture(scope="module")
def world_answers(world) -> list:
    false_answers = pytest.importorskip("false_answers")
    return [(q, false_answers.answers(q)) for q in false_answers.long_questions(world)]


def _judge_world(judge: RubricJudge, q, answer: str):
    return judge.judge(question=q.record["question"], reference=q.record["answers"][0],
                       answer=answer, facts=list(q.record["facts"]))


def test_world_honest_paraphrases_score_one(world_answers) -> None:
    # The reference, reordered, in the corpus's other wordings, merged into one sentence, with
    # pronouns: all state every fact, so all are a full Match.
    from false_answers import HONEST

    judge = RubricJudge()
    for q, texts in world_answers:
        for case in HONEST:
            v = _judge_world(judge, q, texts[case])
            assert v.score == 1.0 and v.match, (case, texts[case], v.rationale)


def test_world_false_answers_score_below_one_fact_missing(world_answers) -> None:
    # True values in the wrong slots, negated facts and bare value lists state no fact (or
    # false ones): each scores below an honest answer that leaves one fact out, and none is
    # a Match.
    from false_answers import FALSE

    judge = RubricJudge()
    for q, texts in world_answers:
        bar = _judge_world(judge, q, texts["one_missing"]).score
        assert 0.0 < bar < 1.0
        for case in FALSE:
            v = _judge_world(judge, q, texts[case])
            assert v.score < bar and not v.match, (case, texts[case], v.rationale)
