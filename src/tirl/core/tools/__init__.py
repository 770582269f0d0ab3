"""Tools the agent can call, and the safe way to call them (see docs/tools.md)."""

from tirl.core.tools.base import (
    FunctionTool,
    ToolResult,
    ToolTimeoutError,
    call_tool,
    call_tools_batch,
    tool_schema,
    tool_schemas,
    validate_arguments,
)
from tirl.core.tools.search import (
    SEARCH_PARAMETERS,
    SearchTool,
    build_search_tool,
    format_passages,
    truncate_text,
)
from tirl.core.tools.search_backends import SEARCH_BACKENDS, Passage
from tirl.core.tools.search_remote import RemoteSearchError

__all__ = [
    "SEARCH_BACKENDS",
    "SEARCH_PARAMETERS",
    "FunctionTool",
    "Passage",
    "RemoteSearchError",
    "SearchTool",
    "ToolResult",
    "ToolTimeoutError",
    "build_search_tool",
    "call_tool",
    "call_tools_batch",
    "format_passages",
    "tool_schema",
    "tool_schemas",
    "truncate_text",
    "validate_arguments",
]
