"""Where torch runs and how it is seeded: the one device rule and the one seed rule every model user shares
(the encoders, the cross-encoder, the eval fine-tuning, the online trainer)."""
from __future__ import annotations

import random

import numpy as np

# torch is imported inside the functions: importing this module (and the config and CLI modules that import the
# ones using it) stays light, and torch loads only where a model is about to run.

def pick_device(device: str = "auto") -> str:
    """``"auto"`` (or empty): ``"cuda"`` when torch sees a GPU, else ``"cpu"``; anything else as given."""
    import torch
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_seed(seed: int) -> None:
    """Seeds Python's, numpy's and torch's global generators (every GPU too): the same seed gives the same
    batches and dropout masks on a CPU."""
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
