"""The chat template renders like Qwen2.5-Instruct; tags are single tokens; helpers are exact."""

from __future__ import annotations

import json

import pytest

from tirl.core.agent import protocol as P


def test_format_tool_call_is_exact_json_between_tags():
    text = P.format_tool_call("search", {"query": "Tarn Bridge"})
    assert text == '<tool_call>\n{"name": "search", "arguments": {"query": "Tarn Bridge"}}\n</tool_call>'
    assert json.loads(text.split("\n")[1]) == {"name": "search", "arguments": {"query": "Tarn Bridge"}}


def test_format_answer_and_think():
    assert P.format_answer("1888") == "<answer> 1888</answer>"
    assert P.format_think("x") == "<think>x</think>"


def test_initial_messages():
    msgs = P.initial_messages("Q?")
    assert msgs == [{"role": "system", "content": P.SYSTEM_PROMPT}, {"role": "user", "content": "Q?"}]


@pytest.mark.parametrize("token", P.SPECIAL_TOKENS + P.PROTOCOL_TAGS)
def test_tags_are_single_tokens(tiny_tokenizer, token):
    ids = tiny_tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1
    # In context too: BPE must not merge a tag with its neighbours.
    ids = tiny_tokenizer.encode(f"x{token}\nabc", add_special_tokens=False)
    assert tiny_tokenizer.convert_tokens_to_ids(token) in ids


def test_protocol_tags_survive_skip_special_tokens(tiny_tokenizer):
    text = "<think>a</think><answer>b</answer><|im_end|>"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "<think>a</think><answer>b</answer>"
    assert tiny_tokenizer.decode(ids) == text


def test_eos_and_pad(tiny_tokenizer):
    assert tiny_tokenizer.eos_token == P.IM_END
    assert tiny_tokenizer.pad_token == P.ENDOFTEXT


TOOLS = [{"type": "function", "function": {"name": "search", "description": "Find passages.",
                                       "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                      "required": ["query"]}}}]
TOOLS_BLOCK = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "search", "description": "Find passages.", '
    '"parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def test_template_renders_chat_like_qwen25(tiny_tokenizer):
    msgs = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Who?"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call>'},
        {"role": "tool", "content": "Doc 1 (Title: T) text"},
        {"role": "assistant", "content": "<answer>A</answer>"},
    ]
    expected = (
        "<|im_start|>system\nSYS" + TOOLS_BLOCK
        + "<|im_start|>user\nWho?<|im_end|>\n"
        + '<|im_start|>assistant\n<tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call><|im_end|>\n'
        + "<|im_start|>user\n<tool_response>\nDoc 1 (Title: T) text\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\n<answer>A</answer><|im_end|>\n"
    )
    assert P.render_text(tiny_tokenizer, msgs, TOOLS) == expected
    ids = P.render(tiny_tokenizer, msgs, TOOLS)
    assert tiny_tokenizer.decode(ids) == expected


def test_consecutive_tool_messages_share_one_user_turn(tiny_tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]
    text = P.render_text(tiny_tokenizer, msgs)
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                    "<|im_start|>user\n<tool_response>\na\n</tool_response>\n"
                    "<tool_response>\nb\n</tool_response><|im_end|>\n")


def test_generation_prompt_and_prefix_property(tiny_tokenizer):
    msgs = P.initial_messages("Q?")
    without = P.render(tiny_tokenizer, msgs, P.SEARCH_TOOL_SCHEMAS)
    with_prompt = P.render(tiny_tokenizer, msgs, P.SEARCH_TOOL_SCHEMAS, add_generation_prompt=True)
    assert P.render_text(tiny_tokenizer, msgs, P.SEARCH_TOOL_SCHEMAS, True).endswith(P.GENERATION_PROMPT)
    # Token-in/token-out relies on the rendered prefix being a token prefix of the longer chat.
    assert with_prompt[: len(without)] == without
    full = P.render(tiny_tokenizer, msgs + [{"role": "assistant", "content": "<answer>x</answer>"}],
                    P.SEARCH_TOOL_SCHEMAS)
    assert full[: len(with_prompt)] == with_prompt


def test_default_tools_match_the_live_search_tool():
    from tirl.core.tools.base import tool_schemas
    from tirl.core.tools.search import SearchTool

    tool = SearchTool(retriever=None)
    assert P.default_tools() == tool_schemas([tool]) == P.SEARCH_TOOL_SCHEMAS


def test_with_system_prepends_once():
    chat = [{"role": "user", "content": "Q"}]
    assert P.with_system(chat) == [{"role": "system", "content": P.SYSTEM_PROMPT}, *chat]
    assert P.with_system(P.with_system(chat)) == P.with_system(chat)
