"""The agent protocol: template tokens, protocol tags, chat template and system prompt.

Qwen2.5/Hermes convention (docs/protocol.md, "1. Protocol"). The built-in tokenizer carries
:data:`CHAT_TEMPLATE`, a copy of Qwen2.5-Instruct's template, so a real Qwen tokenizer and
ours render the same chat the same way and every caller goes through
``tokenizer.apply_chat_template`` (wrapped by :func:`render`).

An assistant turn is plain text: optional ``<think>...</think>``, then either

    <tool_call>
    {"name": "search", "arguments": {"query": "..."}}
    </tool_call>

or ``<answer>...</answer>``. A tool's output comes back as a ``{"role": "tool"}`` message
that the template renders as a user turn wrapped in ``<tool_response>`` tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tirl.core.types import Message

#: Chat-template control tokens (Qwen2.5 names). ``<|endoftext|>`` is the pad token and a
#: second stop token; ``<|im_end|>`` ends every turn and is the eos token.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
#: Protocol tags: atomic (single) tokens in the built-in tokenizer. They are *not* special
#: tokens, so ``decode(..., skip_special_tokens=True)`` keeps them and parsers can see them.
PROTOCOL_TAGS: tuple[str, ...] = (
    THINK_OPEN, THINK_CLOSE,
    TOOL_CALL_OPEN, TOOL_CALL_CLOSE,
    TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE,
    ANSWER_OPEN, ANSWER_CLOSE,
)

#: Qwen2.5-Instruct's chat template (tool-calling version), unchanged except for the
#: default system text. Tool messages become ``<|im_start|>user\n<tool_response>\n...
#: \n</tool_response><|im_end|>\n``; consecutive tool messages share one user turn.
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

#: What an assistant turn header looks like once rendered (the generation prompt).
GENERATION_PROMPT = f"{IM_START}assistant\n"

#: Kept short on purpose: every token of it is context a small model must attend over.
SYSTEM_PROMPT = (
    "You answer questions using a search tool. Think briefly inside <think> </think>. "
    "To look something up, call the search tool inside <tool_call> </tool_call> with a JSON "
    "object. You may search several times. When you know the answer, write only the answer "
    "inside <answer> </answer>."
)

def tool_schema(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI/Qwen function schema the chat template lists in the system turn."""
    return {"type": "function",
            "function": {"name": name, "description": description, "parameters": dict(parameters)}}


def default_tools() -> list[dict[str, Any]]:
    """Schemas of the default tool set (the one search tool), exactly as
    ``tirl.core.tools.base.tool_schemas([SearchTool(...)])`` gives them.

    SFT renders gold chats with these and rollouts render prompts with the live tool's
    schema: the two must agree token for token, so there is one source, the search module.
    """
    from tirl.core.tools.search import SEARCH_DESCRIPTION, SEARCH_PARAMETERS  # lazy: no cycle

    return [tool_schema("search", SEARCH_DESCRIPTION, SEARCH_PARAMETERS)]


def with_system(messages: Sequence[Message], system_prompt: str = SYSTEM_PROMPT) -> list[Message]:
    """``messages`` with ``system_prompt`` prepended unless they already start with a system
    message (stored gold chats have none: the prompt is configuration, not data)."""
    messages = list(messages)
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def initial_messages(question: str, system_prompt: str = SYSTEM_PROMPT) -> list[Message]:
    """The chat an episode starts from: ``[system, user]``."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """The exact assistant text of one tool call (what the template itself would write).

    >>> format_tool_call("search", {"query": "capital of France"})
    '<tool_call>\\n{"name": "search", "arguments": {"query": "capital of France"}}\\n</tool_call>'
    """
    body = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def format_answer(text: str) -> str:
    """The exact assistant text of a final answer (gold chats write answers this way).

    The space after the tag makes the answer's first word the token it is in a passage:
    the byte-level tokenizer keeps a space in front of a lowercase word ("Ġnovelist"), so
    ``<answer>novelist`` would have to be spelt from other tokens instead of copied. The
    parser strips it (docs/protocol.md).

    >>> format_answer("Paris")
    '<answer> Paris</answer>'
    """
    return f"{ANSWER_OPEN} {text}{ANSWER_CLOSE}"


def format_think(text: str) -> str:
    """A thought, to be followed by a tool call or an answer in the same turn.

    >>> format_think("I should search.")
    '<think>I should search.</think>'
    """
    return f"{THINK_OPEN}{text}{THINK_CLOSE}"


def render_text(tokenizer: Any, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None,
                add_generation_prompt: bool = False) -> str:
    """The chat rendered by the tokenizer's chat template, as text."""
    return tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None,
                                         add_generation_prompt=add_generation_prompt, tokenize=False)


def render(tokenizer: Any, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None,
           add_generation_prompt: bool = False) -> list[int]:
    """Token ids of the chat rendered by the tokenizer's chat template.

    Rendered to text then encoded without extra special tokens, which is exactly what
    ``apply_chat_template(tokenize=True)`` does but independent of its return type, which
    changed between transformers versions.
    """
    text = render_text(tokenizer, messages, tools, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def __getattr__(name: str) -> Any:
    # Lazy aliases so callers may write ``protocol.SEARCH_TOOL_SCHEMAS`` while the search
    # module stays the one definition (importing it eagerly could make an import cycle).
    if name == "SEARCH_TOOL_SCHEMAS":
        return default_tools()
    if name in ("SEARCH_PARAMETERS", "SEARCH_DESCRIPTION"):
        from tirl.core.tools import search

        return getattr(search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
