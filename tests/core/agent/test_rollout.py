"""The multi-turn rollout engine: masks, token-in/token-out, logprobs, budgets, tool failures."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from scripted import scripted_out
from tirl.core.agent import protocol as P
from tirl.core.agent.backends import make_backend
from tirl.core.agent.generation import GenOut
from tirl.core.agent.rollout import RolloutConfig, rollout_stats, run_rollouts
from tirl.core.config import ConfigError, build_config
from tirl.core.tools.base import FunctionTool, tool_schemas
from tirl.core.tools.search import build_search_tool
from tirl.core.types import FINISH_REASONS, PARSE_RULES

QUESTIONS = [
    {"id": "q0", "question": "Where was Alice Marlow born?"},
    {"id": "q1", "question": "Who founded Kestrel Works?"},
]
CALL = "<think>search it</think>\n" + P.format_tool_call("search", {"query": "Alice Marlow"})
ANSWER = P.format_answer("Norvale")


@pytest.fixture(scope="module")
def tools():
    corpus = pd.DataFrame({"id": ["1", "2"], "title": ["Alice Marlow", "Kestrel Works"],
                           "text": ["Alice Marlow was born in Norvale in 1931.",
                                    "Kestrel Works was founded by Brin Adler in 1902."]})
    return {"search": build_search_tool(corpus, top_k=1)}


class Scripted:
    """A backend that writes given turn texts (canonically tokenised), honouring budgets.

    ``script(turn, row)`` gives the text of a row's turn; the engine's stop tokens cut it the way
    a model that wrote those tokens would be cut.
    """

    def __init__(self, tokenizer, script, logprob=-0.25):
        self.tok, self.script, self.logprob, self.calls = tokenizer, script, logprob, 0

    def generate(self, prompts, *, max_new_tokens, stop_token_ids=frozenset(), stop_strings=(),
                 temperature=1.0, top_p=1.0, seed=None):
        turn, self.calls = self.calls, self.calls + 1
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else max_new_tokens
        outs = []
        for row, budget in enumerate(budgets):
            outs.append(scripted_out(self.tok, self.script(turn, row), budget, stop_token_ids,
                                     self.logprob))
        return outs


def _roll(tokenizer, tools, script, group_size=1, questions=QUESTIONS[:1], **cfg):
    config = build_config(RolloutConfig, cfg)
    return run_rollouts(backend=Scripted(tokenizer, script), tokenizer=tokenizer, tools=tools,
                        questions=questions, group_size=group_size, config=config)


def _fresh_render(tokenizer, tools, traj):
    return P.render(tokenizer, traj.messages, tool_schemas(tools))


def _check_alignment(traj):
    n = len(traj.token_ids)
    assert len(traj.mask) == n and len(traj.logprobs) == n
    assert set(traj.mask) <= {0, 1}
    assert all(lp == 0.0 for lp, m in zip(traj.logprobs, traj.mask) if m == 0)
    # mask is 1 exactly on the assistant turns' sampled spans
    sampled = [0] * n
    for turn in traj.turns:
        if turn["role"] == "assistant":
            sampled[turn["start"]:turn["end"]] = [1] * (turn["end"] - turn["start"])
    assert traj.mask == sampled
    assert not any(traj.mask[:traj.prompt_len])
    assert traj.finish_reason in FINISH_REASONS
    assert set(traj.parse_errors) <= set(PARSE_RULES)


def test_tool_call_then_answer_matches_a_fresh_render(tiny_tokenizer, tools):
    script = lambda turn, row: [CALL, ANSWER + "<|im_end|>"][turn]  # noqa: E731
    (traj,) = _roll(tiny_tokenizer, tools, script)
    _check_alignment(traj)
    assert traj.finish_reason == "answer" and traj.answer == "Norvale"
    assert traj.token_ids == _fresh_render(tiny_tokenizer, tools, traj)
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert "Norvale in 1931" in traj.messages[3]["content"]
    assert traj.tool_calls == [{"turn": 0, "name": "search", "arguments": {"query": "Alice Marlow"},
                                "ok": True, "error": None}]
    # sampled tokens are exactly the scripted ones, with their logprobs
    first = traj.turns[0]
    assert tiny_tokenizer.decode(traj.token_ids[first["start"]:first["end"]]) == CALL
    assert all(traj.logprobs[t] == -0.25 for t in range(first["start"], first["end"]))
    # tool-response tokens are never trainable
    tool_turn = traj.turns[1]
    assert tool_turn["role"] == "tool" and not any(traj.mask[tool_turn["start"]:tool_turn["end"]])


def test_answer_without_im_end_is_closed_by_the_engine(tiny_tokenizer, tools):
    (traj,) = _roll(tiny_tokenizer, tools, lambda turn, row: ANSWER)
    assert traj.finish_reason == "answer"
    assert traj.token_ids == _fresh_render(tiny_tokenizer, tools, traj)
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert traj.token_ids[traj.turns[0]["end"]] == im_end and traj.mask[traj.turns[0]["end"]] == 0


def test_non_canonical_tokens_are_kept_as_sampled(tiny_tokenizer, tools):
    """Documented difference: a model may sample a non-canonical split of a text; the engine
    keeps those ids (token-in/token-out), so ids differ from a fresh render there while the
    decoded text is the same."""
    pieces = ["<answer>", *"Norvale", "</answer>"]
    ids = [tiny_tokenizer.convert_tokens_to_ids(p) if p.startswith("<") else
           tiny_tokenizer(p, add_special_tokens=False)["input_ids"][0] for p in pieces]

    class CharByChar:
        def generate(self, prompts, **kw):
            return [GenOut(list(ids), [-1.0] * len(ids), "stop_token") for _ in prompts]

    (traj,) = run_rollouts(backend=CharByChar(), tokenizer=tiny_tokenizer, tools=tools,
                           questions=QUESTIONS[:1], group_size=1, config=RolloutConfig())
    fresh = _fresh_render(tiny_tokenizer, tools, traj)
    assert traj.answer == "Norvale"
    assert traj.token_ids != fresh
    assert tiny_tokenizer.decode(traj.token_ids) == tiny_tokenizer.decode(fresh)
    assert traj.token_ids[traj.prompt_len:traj.prompt_len + len(ids)] == ids


@pytest.mark.parametrize("script,cfg,reason,rules", [
    (lambda t, r: "Norvale<|im_end|>", {}, "invalid", ["text_outside_tags", "no_action"]),
    (lambda t, r: P.format_tool_call("browse", {"url": "x"}), {}, "invalid", ["unknown_tool"]),
    (lambda t, r: "<think>hmm</think><|im_end|>", {}, "eos", ["empty_turn"]),
    (lambda t, r: CALL, {"max_turns": 3}, "max_turns", []),
    (lambda t, r: "<answer>" + "Norvale " * 100, {"max_new_tokens_per_turn": 20}, "invalid", ["unclosed_tag"]),
])
def test_finish_reasons(tiny_tokenizer, tools, script, cfg, reason, rules):
    (traj,) = _roll(tiny_tokenizer, tools, script, **cfg)
    _check_alignment(traj)
    assert traj.finish_reason == reason
    assert traj.parse_errors == rules
    if reason == "max_turns":
        assert traj.num_turns == 3 and traj.num_tool_calls == 2  # the last call gets no response
    else:
        assert traj.num_turns == 1
    assert traj.token_ids == _fresh_render(tiny_tokenizer, tools, traj) or traj.finish_reason == "eos"


def test_total_token_budget(tiny_tokenizer, tools):
    prompt = len(P.render(tiny_tokenizer, P.initial_messages(QUESTIONS[0]["question"]),
                          tool_schemas(tools), add_generation_prompt=True))
    # Room for the first call and its observation, not for a long second turn.
    limit = prompt + 120
    (traj,) = _roll(tiny_tokenizer, tools, lambda t, r: [CALL, "<think>" + "so " * 200][t],
                    max_total_tokens=limit, max_new_tokens_per_turn=200)
    _check_alignment(traj)
    assert traj.finish_reason == "max_tokens"
    assert traj.parse_errors == []  # a turn cut by the budget is not judged
    assert len(traj.token_ids) <= limit
    assert traj.turns[-1]["truncated"]


def test_observation_that_does_not_fit_ends_with_max_tokens(tiny_tokenizer, tools):
    prompt = len(P.render(tiny_tokenizer, P.initial_messages(QUESTIONS[0]["question"]),
                          tool_schemas(tools), add_generation_prompt=True))
    (traj,) = _roll(tiny_tokenizer, tools, lambda t, r: CALL, max_total_tokens=prompt + 40)
    assert traj.finish_reason == "max_tokens" and traj.num_tool_calls == 1
    assert len(traj.token_ids) <= prompt + 40


def test_tool_responses_are_truncated(tiny_tokenizer):
    long = FunctionTool("search", "s", P.SEARCH_PARAMETERS, lambda query: "word " * 500)
    (traj,) = _roll(tiny_tokenizer, {"search": long}, lambda t, r: [CALL, ANSWER][t],
                    max_tool_response_tokens=10)
    tool_turn = traj.turns[1]
    content = traj.messages[3]["content"]
    assert len(tiny_tokenizer(content, add_special_tokens=False)["input_ids"]) <= 10
    # the template adds a fixed number of tokens around the content
    overhead = len(P.render(tiny_tokenizer, [{"role": "user", "content": "q"}, {"role": "tool", "content": ""}],
                            add_generation_prompt=True)) - len(P.render(tiny_tokenizer, [{"role": "user", "content": "q"}]))
    assert tool_turn["end"] - tool_turn["start"] <= 10 + overhead + 2
    assert traj.token_ids == P.render(tiny_tokenizer, traj.messages, tool_schemas({"search": long}))


def test_failing_tool_is_an_observation_and_the_episode_goes_on(tiny_tokenizer):
    def boom(query):
        raise ConnectionError("retriever down")

    failing = {"search": FunctionTool("search", "s", P.SEARCH_PARAMETERS, boom)}
    trajs = _roll(tiny_tokenizer, failing, lambda t, r: [CALL, ANSWER][t], group_size=3,
                  questions=QUESTIONS)
    assert len(trajs) == 6
    for traj in trajs:
        assert traj.finish_reason == "answer"
        assert traj.tool_calls[0]["ok"] is False and "retriever down" in traj.tool_calls[0]["error"]
        assert "retriever down" in traj.messages[3]["content"]
        assert traj.num_tool_failures == 1
    stats = rollout_stats(trajs)
    assert stats["rollout/tool_failures"] == 6 and stats["rollout/finish/answer"] == 6


def test_order_is_question_then_sample(tiny_tokenizer, tools):
    trajs = _roll(tiny_tokenizer, tools, lambda t, r: ANSWER, group_size=3, questions=QUESTIONS)
    assert [(t.question_id, t.sample_idx) for t in trajs] == [
        ("q0", 0), ("q0", 1), ("q0", 2), ("q1", 0), ("q1", 1), ("q1", 2)]


def test_rows_finish_independently(tiny_tokenizer, tools):
    """Row 0 answers at once, row 1 searches first: the batch shrinks, nothing mixes up."""
    script = lambda t, r: ANSWER if r == 0 or t == 1 else CALL  # noqa: E731
    a, b = _roll(tiny_tokenizer, tools, script, group_size=2)
    assert a.num_turns == 1 and b.num_turns == 2
    assert a.finish_reason == b.finish_reason == "answer"
    for traj in (a, b):
        assert traj.token_ids == _fresh_render(tiny_tokenizer, tools, traj)


# --- with the tiny model ----------------------------------------------------------------------


def _forward_logprobs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [0.0] + [logp[k - 1, ids[k]].item() for k in range(1, len(ids))]


class ScriptedThenModel:
    """Turn 0 is a scripted tool call; later turns are sampled by the hf backend, so the
    model's logprobs are checked *after* an observation."""

    def __init__(self, tokenizer, hf):
        self.scripted, self.hf, self.turn = Scripted(tokenizer, lambda t, r: CALL), hf, 0

    def generate(self, prompts, **kw):
        self.turn += 1
        return (self.scripted if self.turn == 1 else self.hf).generate(prompts, **kw)


def test_logprobs_match_a_forward_pass(tiny_model, tiny_tokenizer, tools):
    hf = make_backend("hf", tiny_model, tiny_tokenizer)
    config = RolloutConfig(max_new_tokens_per_turn=40, seed=3)
    trajs = run_rollouts(backend=ScriptedThenModel(tiny_tokenizer, hf), tokenizer=tiny_tokenizer,
                         tools=tools, questions=QUESTIONS, group_size=2, config=config)
    for traj in trajs:
        _check_alignment(traj)
        assert traj.num_turns == 2
        ref = _forward_logprobs(tiny_model, traj.token_ids)
        second = traj.turns[2]
        span = range(second["start"], second["end"])
        assert [traj.logprobs[t] for t in span] == pytest.approx([ref[t] for t in span], abs=1e-4)


def test_same_seed_same_trajectories_on_cpu(tiny_model, tiny_tokenizer, tools):
    hf = make_backend("hf", tiny_model, tiny_tokenizer)
    config = RolloutConfig(max_new_tokens_per_turn=10, seed=5)
    run = lambda seed=None: run_rollouts(backend=hf, tokenizer=tiny_tokenizer, tools=tools,  # noqa: E731
                                         questions=QUESTIONS, group_size=2, config=config, seed=seed)
    a, b, c = run(), run(), run(seed=6)
    assert [t.token_ids for t in a] == [t.token_ids for t in b]
    assert [t.logprobs for t in a] == [t.logprobs for t in b]
    assert [t.token_ids for t in a] != [t.token_ids for t in c]
    for traj in a:
        _check_alignment(traj)
        assert sum(traj.mask) == sum(t["end"] - t["start"] for t in traj.turns if t["role"] == "assistant")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="parser"):
        build_config(RolloutConfig, {"parser": "xml"})
    with pytest.raises(ConfigError, match="max_turns"):
        build_config(RolloutConfig, {"max_turns": 0})


def test_prompt_longer_than_budget_is_a_clear_error(tiny_tokenizer, tools):
    with pytest.raises(ValueError, match="max_total_tokens"):
        _roll(tiny_tokenizer, tools, lambda t, r: ANSWER, max_total_tokens=16)


def test_engine_names_each_trajectory_for_kv_reuse(tiny_tokenizer, tools):
    """Backends that accept ``cache_ids`` get one stable id per trajectory across turns."""
    seen = []

    class Recording(Scripted):
        def generate(self, prompts, *, cache_ids=None, **kw):
            seen.append(list(cache_ids))
            return super().generate(prompts, **kw)

    script = lambda t, r: ANSWER if r == 0 or t == 1 else CALL  # noqa: E731
    run_rollouts(backend=Recording(tiny_tokenizer, script), tokenizer=tiny_tokenizer, tools=tools,
                 questions=QUESTIONS[:1], group_size=3, config=RolloutConfig())
    assert seen == [[0, 1, 2], [1, 2]]


def test_a_blank_query_is_a_verdict_of_its_own_trajectory_only(tiny_tokenizer, tools):
    """Issue 15, item 1: one trajectory's blank query is a parse verdict (schema_mismatch) that
    PRS sees, and no other trajectory's tool result changes."""
    from tirl.core.rewards.prs import PRSConfig, prs_reward

    blank = P.format_tool_call("search", {"query": "   "})
    script = lambda turn, row: [[CALL, blank][row], ANSWER][turn]  # noqa: E731
    both = _roll(tiny_tokenizer, tools, script, questions=QUESTIONS)
    (alone,) = _roll(tiny_tokenizer, tools, lambda turn, row: [CALL, ANSWER][turn])
    good, bad = both
    assert good.messages == alone.messages and good.tool_calls == alone.tool_calls
    assert good.tool_calls[0]["ok"] and good.finish_reason == "answer"
    assert bad.parse_errors == ["schema_mismatch"] and bad.finish_reason == "invalid"
    assert bad.tool_calls == []  # never executed
    q = {"id": "q1", "question": "?", "answers": ["Norvale"], "task": "short"}
    assert prs_reward(bad, q, config=PRSConfig()).stage == 0


def test_lone_surrogates_from_the_model_or_a_tool_never_reach_the_parquet_save(
        tiny_tokenizer, tmp_path):
    """Issue 15, item 5: a JSON escape of a lone surrogate in a tool call, and a tool whose
    text holds one, are made valid UTF-8 where they enter; the rollout saves and loads."""
    from tirl.core.tools.search import SEARCH_PARAMETERS
    from tirl.datasets.trajectories import TrajectoryDataset

    echo = FunctionTool("search", "echo", SEARCH_PARAMETERS, lambda query: f"[{query}] caf\udcff")
    call = '<tool_call>\n{"name": "search", "arguments": {"query": "caf\\ud800 \\ud83d\\ude00"}}\n</tool_call>'
    script = lambda turn, row: [call, ANSWER][turn]  # noqa: E731
    (traj,) = _roll(tiny_tokenizer, {"search": echo}, script)
    assert traj.tool_calls[0]["arguments"] == {"query": "caf\ufffd \U0001f600"}
    assert traj.messages[3]["content"] == "[caf\ufffd \U0001f600] caf\ufffd"
    data = TrajectoryDataset(str(tmp_path / "rollouts.parquet"))
    data.save([traj])
    assert data.load()[0].tool_calls == traj.tool_calls
