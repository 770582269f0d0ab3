"""Validate tables with Great Expectations (GX Core 1.x), suites declared as data.

A suite is a list of ``{"expectation": "ExpectColumnValuesToNotBeNull", "kwargs": {...}}``
items (read from ``parameters_data_prep.yml`` so that DVC tracks them); the names are GX
expectation classes (``great_expectations.expectations``). Properties GX cannot see on a
list-valued column (how many non-empty answers a question has, whether a chat ends with an
answer) are first *derived* as helper columns (:data:`DERIVERS`), then checked like any
other column, so that every rule is a visible GX expectation in the report.

:func:`validate` returns a JSON-serialisable report; :func:`raise_if_failed` turns a failed
report into a :class:`DataValidationError` whose message names each failed expectation and a
few offending rows (by id, row number and, for rows read from a file, the file line), with a
hint of the likely cause where the helper column has one (:data:`HINTS`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tirl.core.agent.protocol import ANSWER_CLOSE, ANSWER_OPEN, TOOL_CALL_OPEN
from tirl.core.data.loaders import row_origins

log = logging.getLogger(__name__)

#: Offending rows listed per failed expectation (in the report and the error message).
MAX_EXAMPLES = 5


class DataValidationError(ValueError):
    """A dataset failed its expectation suite. ``report`` is the full validation report."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


# --- derived helper columns ----------------------------------------------------------------


def _as_list(value: Any) -> list[Any] | None:
    # Parquet round trips turn lists into numpy arrays; both are lists here.
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return None


def _str_len(value: Any) -> int:
    """Length of a stripped string; -1 when the value is not a string (fails any bound)."""
    return len(value.strip()) if isinstance(value, str) else -1


def derive_questions(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``question_len``, ``n_answers``, ``answers_are_strings``, ``max_answer_len``,
    ``n_facts``, ``long_has_facts`` and ``question_in_other_split``."""
    out = df.copy()
    answers = [(_as_list(a) if _as_list(a) is not None else [a]) for a in df["answers"]]
    facts = [(_as_list(f) or []) for f in df["facts"]] if "facts" in df else [[]] * len(df)
    out["question_len"] = [_str_len(q) for q in df["question"]]
    out["answers_are_strings"] = [bool(a) and all(isinstance(x, str) for x in a) for a in answers]
    out["n_answers"] = [sum(isinstance(x, str) and bool(x.strip()) for x in a) for a in answers]
    out["max_answer_len"] = [max((_str_len(x) for x in a), default=-1) for a in answers]
    out["n_facts"] = [len(f) for f in facts]
    tasks = df["task"] if "task" in df else pd.Series(["short"] * len(df))
    out["long_has_facts"] = [t != "long" or len(f) > 0 for t, f in zip(tasks, facts)]
    # Leakage: the same question text (case and spaces aside) in two different splits.
    norm = pd.Series([" ".join(q.lower().split()) if isinstance(q, str) else "" for q in
                      df["question"]], index=df.index)
    splits = df["split"] if "split" in df else pd.Series([""] * len(df), index=df.index)
    n_splits = pd.DataFrame({"q": norm, "s": splits}).groupby("q")["s"].transform("nunique")
    out["question_in_other_split"] = (n_splits > 1).to_numpy()
    return out


def derive_corpus(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``title_len``, ``text_len`` (characters) and ``text_words``."""
    out = df.copy()
    out["title_len"] = [_str_len(t) for t in df["title"]]
    out["text_len"] = [_str_len(t) for t in df["text"]]
    out["text_words"] = [len(t.split()) if isinstance(t, str) else -1 for t in df["text"]]
    return out


def derive_gold(df: pd.DataFrame, question_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Add ``messages_ok`` (JSON list of {role, content} strings), ``n_messages``,
    ``first_role``, ``ends_with_answer``, ``n_tool_calls``, ``question_known``."""
    out = df.copy()
    known = set(question_ids) if question_ids is not None else None
    ok, n, first, ends, calls = [], [], [], [], []
    for raw in df["messages"]:
        try:
            msgs = json.loads(raw)
            good = isinstance(msgs, list) and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in msgs)
        except (TypeError, json.JSONDecodeError):
            msgs, good = [], False
        msgs = msgs if good else []
        ok.append(good)
        n.append(len(msgs))
        first.append(msgs[0]["role"] if msgs else "")
        last = msgs[-1] if msgs else {"role": "", "content": ""}
        ends.append(last["role"] == "assistant" and last["content"].startswith(ANSWER_OPEN)
                    and last["content"].endswith(ANSWER_CLOSE))
        calls.append(sum(m["role"] == "assistant" and TOOL_CALL_OPEN in m["content"]
                         for m in msgs))
    out["messages_ok"], out["n_messages"], out["first_role"] = ok, n, first
    out["ends_with_answer"], out["n_tool_calls"] = ends, calls
    out["question_known"] = [known is None or q in known for q in df["question_id"]]
    return out


#: What a failure of a helper column usually means, in the user's terms: the bare
#: ``text_len value=0`` does not say that a FlashRAG passage lost its text to its title.
HINTS: dict[str, str] = {
    "question_len": "the question is empty (or only whitespace), or longer than 1000 "
                    "characters",
    "n_answers": "a question needs at least one non-empty answer in 'golden_answers'",
    "title_len": "a title is at most 500 characters: in a FlashRAG corpus the first line of "
                 "'contents' is the title, so without a title line the first line of the text "
                 "(or all of it) becomes the title",
    "text_len": "the passage has no text: in a FlashRAG corpus the first line of 'contents' "
                "is the title and the text starts on the next line, so a 'contents' of one "
                "line is a title with no text (write it as \"Title\\nText\")",
    "text_words": "a passage has 1 to 5000 words (an empty one: see text_len; split longer "
                  "passages)",
    "question_in_other_split": "the same question text (case and spaces aside) is in two "
                               "splits, which leaks test questions into training",
}


DERIVERS: dict[str, Callable[..., pd.DataFrame]] = {
    "questions": derive_questions,
    "corpus": derive_corpus,
    "gold": derive_gold,
}


# --- suites --------------------------------------------------------------------------------


def _expectation_classes() -> dict[str, type]:
    import great_expectations as gx

    return {n: getattr(gx.expectations, n) for n in dir(gx.expectations)
            if n.startswith("Expect") and isinstance(getattr(gx.expectations, n), type)}


def build_expectations(suite_spec: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """GX expectation objects from a suite spec; a bad item raises naming its position."""
    classes = _expectation_classes()
    out = []
    for i, item in enumerate(suite_spec):
        where = f"validation.{name}[{i}]"
        if not isinstance(item, Mapping) or "expectation" not in item:
            raise ValueError(f"{where}: expected a mapping with key 'expectation' "
                             f"(and optional 'kwargs'), got {item!r}")
        unknown = set(item) - {"expectation", "kwargs"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        cls = classes.get(item["expectation"])
        if cls is None:
            raise ValueError(f"{where}: unknown expectation {item['expectation']!r} "
                             f"(known: {sorted(classes)})")
        try:
            out.append(cls(**dict(item.get("kwargs") or {})))
        except Exception as exc:  # pydantic errors: re-raise with the item named
            raise ValueError(f"{where}: bad kwargs for {item['expectation']}: {exc}") from exc
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


_CONTEXT: Any = None


def _gx_context() -> Any:
    """One ephemeral GX context per process: each new one makes a temporary docs folder."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def validate(df: pd.DataFrame, suite_spec: Sequence[Mapping[str, Any]], name: str, *,
             id_column: str = "id", max_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Run the suite on ``df`` (helper columns already derived) -> report dict.

    Report: ``{"name", "success", "n_rows", "expectations": [{"expectation", "kwargs",
    "success", "unexpected_count", "examples": [{"row", "id", "value", "at"}],
    "observed_value", "exception", "hint"}]}``; ``at`` is ``"file:line"`` for a row a loader
    read from a file, else None. Never raises on bad data; raises ValueError on a bad suite spec.
    """
    expectations = build_expectations(suite_spec, name)
    origins = row_origins(df)  # file lines of rows a loader read, before the index changes
    data = df.reset_index(drop=True)  # GX reports index labels: make them row numbers
    context = _gx_context()
    source = f"tirl_{name}_{uuid.uuid4().hex}"
    batch = (context.data_sources.add_pandas(source)
             .add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe(name)
             .get_batch(batch_parameters={"dataframe": data}))
    try:
        validated = [batch.validate(e, result_format="COMPLETE") for e in expectations]
    finally:
        context.data_sources.delete(source)
    results = []
    for spec, res in zip(suite_spec, validated):
        info = res.exception_info or {}
        exc = info.get("exception_message") if info.get("raised_exception") else None
        result = res.result or {}
        rows = list(result.get("unexpected_index_list") or [])[:max_examples]
        examples = []
        for r in rows:
            if not isinstance(r, (int, np.integer)):
                continue
            value = spec.get("kwargs", {}).get("column")
            examples.append({
                "row": int(r),
                "id": str(data.at[r, id_column]) if id_column in data.columns else None,
                "value": _jsonable(data.at[r, value]) if value in data.columns else None,
                "at": origins[r],
            })
        results.append({
            "expectation": spec["expectation"],
            "kwargs": _jsonable(dict(spec.get("kwargs") or {})),
            "success": bool(res.success) and exc is None,
            "unexpected_count": int(result.get("unexpected_count") or 0),
            "examples": examples,
            "observed_value": _jsonable(result.get("observed_value")),
            "exception": exc,
            "hint": HINTS.get(spec.get("kwargs", {}).get("column")),
        })
    report = {"name": name, "success": all(r["success"] for r in results),
              "n_rows": int(len(data)), "expectations": results}
    log.info("validation %s: %s (%d rows, %d/%d expectations passed)", name,
             "passed" if report["success"] else "FAILED", len(data),
             sum(r["success"] for r in results), len(results))
    return report


def failure_message(report: Mapping[str, Any]) -> str:
    """One line per failed expectation, with its offending rows."""
    lines = []
    tables = report.get("tables", {report.get("name", "data"): report})
    for table, rep in tables.items():
        for r in rep["expectations"]:
            if r["success"]:
                continue
            col = r["kwargs"].get("column")
            what = f"{table}: {r['expectation']}" + (f"(column={col!r})" if col else "")
            if r["exception"]:
                lines.append(f"{what} raised: {r['exception']}")
                continue
            detail = f"{r['unexpected_count']} offending rows" if r["unexpected_count"] else \
                f"observed {r['observed_value']!r}, kwargs {r['kwargs']}"
            ex = ", ".join(f"row {e['row']} (id={e['id']!r}, value={e['value']!r})"
                           + (f" at {e['at']}" if e.get("at") else "") for e in r["examples"])
            hint = f"; hint: {r['hint']}" if r.get("hint") else ""
            lines.append(f"{what} failed: {detail}" + (f"; e.g. {ex}" if ex else "") + hint)
    return "\n".join(lines)


def raise_if_failed(report: Mapping[str, Any]) -> None:
    """Raise :class:`DataValidationError` naming every failed expectation, else return."""
    if report["success"]:
        return
    msg = failure_message(report)
    raise DataValidationError(f"data validation failed:\n{msg}", dict(report))


def validate_tables(tables: Mapping[str, tuple[pd.DataFrame, Sequence[Mapping[str, Any]]]],
                    **kwargs: Any) -> dict[str, Any]:
    """Validate several already-derived tables -> ``{"success", "tables": {name: report}}``."""
    reports = {name: validate(df, spec, name, **kwargs) for name, (df, spec) in tables.items()}
    return {"success": all(r["success"] for r in reports.values()), "tables": reports}
