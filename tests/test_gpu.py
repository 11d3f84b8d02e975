"""GPU paths: the same answers on CUDA as on the CPU. Skipped where torch sees no GPU."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.data.synthetic import synthetic
from ecomrec.device import resolve_device
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_the_device_resolves_to_cuda() -> None:
    assert resolve_device(None).startswith("cuda")


def test_bi_encoder_on_cuda_matches_the_cpu() -> None:
    data = synthetic(seed=0)
    gpu = BiEncoderRetriever(fine_tune=False, layers=1, device="cuda", show_progress=False).fit(data)
    cpu = BiEncoderRetriever(fine_tune=False, layers=1, device="cpu", show_progress=False).fit(data)
    queries = ["red retrospot lunch bag", "blue polkadot mug"]
    np.testing.assert_allclose(gpu.encode_queries(queries), cpu.encode_queries(queries), atol=2e-2)  # fp16 autocast
    for model in (gpu, cpu):
        found = model.search("red retrospot", k=5).item_ids[0]
        assert all("red retrospot" in model.item_texts_[i] for i in found)
