"""Kedro dataset for a transformers model directory: ``{"model": ..., "tokenizer": ...}``.

``save`` writes ``save_pretrained`` output for both into a temporary sibling directory and
swaps it in with renames recorded in a journal (:mod:`tirl.datasets.publish`), so a crash
mid-save leaves the previous model directory intact, a crash mid-swap is finished at the next
save or load, and readers never see a half-written one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from tirl.datasets.atomic import atomic_dir
from tirl.datasets.publish import settle

log = logging.getLogger(__name__)


class HFModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A causal LM and its tokenizer in one ``save_pretrained`` directory.

    Catalog::

        base_model:
          type: tirl.datasets.hf_model.HFModelDataset
          path: data/06_models/base
          load_args: {dtype: auto, device: null}

    ``load_args`` go to :func:`tirl.core.modeling.factory.load_model` (``dtype``, ``device``,
    ``trust_remote_code``); downloads are never made from here. ``save`` also writes the
    optional ``"files"`` entry (file name -> text, e.g. ``README.md``) into the directory.
    """

    def __init__(self, path: str, load_args: dict[str, Any] | None = None,
                 save_args: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata

    @property
    def publish_target(self) -> Path:
        """The directory a save publishes (what an output set stages)."""
        return self._path

    def load(self) -> dict[str, Any]:
        from tirl.core.modeling.factory import load_model

        if not self._exists():
            raise DatasetError(f"no model directory at {self._path} (expected config.json there)")
        model, tokenizer = load_model(str(self._path), allow_download=False, **self._load_args)
        return {"model": model, "tokenizer": tokenizer}

    def save(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or not {"model", "tokenizer"} <= set(data):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DatasetError(f"{self._path}: save() expects a dict with 'model' and 'tokenizer', got {got}")
        # Written into a staging directory and swapped in by tirl.datasets.publish (a
        # journal makes the swap recoverable after a kill), so the model and its extra files
        # are published as one set, with the other outputs of the node when it has some.
        with atomic_dir(self._path) as tmp:
            data["model"].save_pretrained(tmp, **self._save_args)
            data["tokenizer"].save_pretrained(tmp)
            for name, text in (data.get("files") or {}).items():
                if Path(name).name != name:
                    raise DatasetError(f"{self._path}: extra file name {name!r} must be a plain file name")
                (tmp / name).write_text(text)
        log.info("saved model to %s", self._path)

    def _exists(self) -> bool:
        settle(self._path)  # a swap interrupted between its two renames is finished first
        return (self._path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args, "save_args": self._save_args}
