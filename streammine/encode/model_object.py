"""Model objects passed from Python (``streammine.mine(model=...)``): their *current in-memory* weights encode.

An object is published under the name ``pyobject://<weights key>`` (``encoder.model``), where the key is a digest
of its state (``weights_key``): the embedding store's model key follows the weights, so changed weights never
reuse stale vectors and unchanged weights reuse them. On the Ray path the object is put once into Ray's object
store (``ship_to_ray``) and the encoder actors rebuild it from there (``resolve``): no folder is reloaded.

Invariant: the user's object is never mutated; the encoder works on a copy (``SentenceTransformerEncoder``).
"""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Optional

MODEL_OBJECT_SCHEME = "pyobject://"  # not memory:// (fsspec's in-memory filesystem, a real model location)
REGISTRY_ACTOR = "streammine-model-objects"

_LOCAL: dict = {}        # weights key -> the published object, in the process that published it
_KEY_MEMO: dict = {}     # id(object) -> (state signature, key): rehash only when a tensor changed
_SHIPPED: dict = {}      # weights key -> ObjectRef, for the current Ray session
_registry = None         # the driver's handle on the registry actor (keeps it alive)


def is_model_object(model) -> bool:
    """A model given as an object, not as a name or path."""
    return model is not None and not isinstance(model, (str, os.PathLike))


def is_published(name: Optional[str]) -> bool:
    return isinstance(name, str) and name.startswith(MODEL_OBJECT_SCHEME)


def _modules_of(model) -> list:
    """The torch modules holding the object's weights: itself, else its attributes that have a state dict (a
    wrapper around a model, as a duck-typed object usually is)."""
    if hasattr(model, "state_dict"):
        return [("", model)]
    return [(k, v) for k, v in sorted(vars(model).items()) if hasattr(v, "state_dict")] \
        if hasattr(model, "__dict__") else []


def weights_key(model) -> str:
    """16 hex digits of the SHA-256 of the object's class, sequence length and state (names, dtypes, shapes,
    bytes). An object with no torch state gets a fresh random key: never reused, never stale."""
    import torch
    modules = _modules_of(model)
    if not modules:
        return uuid.uuid4().hex[:16]
    tensors = [(f"{m}.{n}", t) for m, mod in modules for n, t in mod.state_dict().items()]
    # tensors' version counters move with every in-place change (an optimizer step, mul_): unchanged counters,
    # storages and names mean unchanged weights, so the ~0.2 s hash of a MiniLM is paid once per change
    signature = tuple((n, t.data_ptr(), t._version, tuple(t.shape)) for n, t in tensors)
    memo = _KEY_MEMO.get(id(model))
    if memo is not None and memo[0] == signature:
        return memo[1]
    h = hashlib.sha256(f"{type(model).__qualname__}|{getattr(model, 'max_seq_length', None)}".encode())
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    key = h.hexdigest()[:16]
    _KEY_MEMO[id(model)] = (signature, key)
    return key


def publish(model) -> str:
    """The ``encoder.model`` name of ``model``'s current weights (the object is held here under it)."""
    key = weights_key(model)
    _LOCAL[key] = model
    return MODEL_OBJECT_SCHEME + key


def is_sentence_transformer(model) -> bool:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # pragma: no cover - a core dependency
        return False
    return isinstance(model, SentenceTransformer)


def ship_to_ray(name: str) -> None:
    """Puts the published object into Ray's object store (once per key and session) and names it in the registry
    actor, where encoder actors find it. A model on a GPU is shipped as a CPU copy (any node can load it); the
    user's object is not moved."""
    import copy
    import ray
    global _registry
    key = name[len(MODEL_OBJECT_SCHEME):]
    if key in _SHIPPED:
        return
    model = _LOCAL[key]
    device = str(getattr(model, "device", "cpu"))
    if not is_sentence_transformer(model):
        _pickle_class_by_value(type(model))
    ref = ray.put(model if device == "cpu" else copy.deepcopy(model).cpu())
    if _registry is None:
        _registry = _Registry.options(name=REGISTRY_ACTOR, get_if_exists=True).remote()
    ray.get(_registry.put.remote(key, [ref]))  # boxed: the actor keeps the reference, not the value
    _SHIPPED[key] = ref


def _pickle_class_by_value(cls) -> None:
    """A user's wrapper class often lives in a script, notebook or test module the workers cannot import: it
    travels by value (its code pickled with the object); installed packages stay by reference."""
    import sys
    from ray import cloudpickle
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    if module is not None and cls.__module__ != "__main__" and "site-packages" not in path:
        cloudpickle.register_pickle_by_value(module)


def forget_ray() -> None:
    """Ray was shut down: what was shipped is gone with it."""
    global _registry
    _SHIPPED.clear()
    _registry = None


def resolve(name: str):
    """(object, local): the published object; ``local`` when it is the caller's own (this process published it),
    else a copy rebuilt from Ray's object store (an encoder actor)."""
    key = name[len(MODEL_OBJECT_SCHEME):]
    if key in _LOCAL:
        return _LOCAL[key], True
    import ray
    from ..errors import StreamMineError
    try:
        boxed = ray.get(ray.get_actor(REGISTRY_ACTOR).get.remote(key))
    except ValueError as e:  # no registry: not a run started by the process that published the object
        raise StreamMineError(f"model object {name} is not available in this Ray session") from e
    if boxed[0] is None:
        raise StreamMineError(f"model object {name} is not available in this Ray session")
    return ray.get(boxed[0]), False


def _make_registry():
    import ray

    @ray.remote(num_cpus=0)
    class Registry:
        def __init__(self):
            self.refs: dict = {}

        def put(self, key: str, boxed: list) -> None:
            self.refs[key] = boxed[0]

        def get(self, key: str) -> list:
            return [self.refs.get(key)]
    return Registry


class _LazyRegistry:
    """The registry actor class, defined on first use (importing this module needs no Ray)."""
    _cls = None

    def options(self, **kw):
        if _LazyRegistry._cls is None:
            _LazyRegistry._cls = _make_registry()
        return _LazyRegistry._cls.options(**kw)


_Registry = _LazyRegistry()


class DuckEncoder:
    """An object with the peer's encoding interface (``encode_query`` / ``encode_document``, else ``encode`` with a
    prompt), called as the peer calls it; vectors L2-normalized when ``encoder.normalize`` (cosine scores)."""

    def __init__(self, cfg, model):
        import numpy as np
        self.cfg, self.model, self.name = cfg, model, cfg.model
        self._np = np
        self._dim = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._call("query", ["dimension probe"], "").shape[1])
        return self._dim

    def _call(self, side: str, texts: list, prompt: str):
        np = self._np
        fn = getattr(self.model, f"encode_{side}", None) or self.model.encode
        kw = {"convert_to_numpy": True}
        if self.cfg.batch_size:
            kw["batch_size"] = self.cfg.batch_size
        v = fn(list(texts), prompt=prompt or None, **kw)
        if not isinstance(v, np.ndarray):
            v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        v = np.ascontiguousarray(v, dtype=np.float32)
        if self.cfg.normalize:
            n = np.linalg.norm(v, axis=1, keepdims=True)
            v = v / np.where(n > 0, n, 1.0)
        return v

    def _encode(self, texts, side: str, prompt: str):
        if len(texts) == 0:
            return self._np.zeros((0, self.dim), self._np.float32)
        v = self._call(side, texts, prompt)
        self._dim = v.shape[1]
        return v

    def encode_queries(self, texts):
        return self._encode(texts, "query", self.cfg.query_prompt)

    def encode_documents(self, texts):
        return self._encode(texts, "document", self.cfg.document_prompt)


def make_encoder(cfg, torch_threads: Optional[int] = None):
    """The encoder of ``cfg`` (an ``EncoderConfig``): a published object's, else a model loaded by name."""
    from .sentence_transformer import SentenceTransformerEncoder
    if not is_published(cfg.model):
        return SentenceTransformerEncoder(cfg, torch_threads=torch_threads)
    model, local = resolve(cfg.model)
    if is_sentence_transformer(model):
        # the caller's own object is copied before any change; one rebuilt from the object store is ours
        return SentenceTransformerEncoder(cfg, torch_threads=torch_threads, model=model, copy_model=local)
    return DuckEncoder(cfg, model)
