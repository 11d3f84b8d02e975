"""The portable encoder a Ray worker receives: the model's numbers without sentence-transformers."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from ecomrec.encoders import PortableEncoder, encode_texts, load_sentence_transformer

pytestmark = pytest.mark.slow

TITLES = ["red retrospot lunch bag", "WHITE HANGING HEART T-LIGHT HOLDER", "crème brûlée set ☕ déjà", "x",
          " ".join(["word"] * 60), "SET OF 3 CAKE TINS PANTRY DESIGN", ""]


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_sentence_transformer(None, "cpu", layers=1)


def test_the_portable_encoder_gives_the_models_tokens_and_vectors(model, tmp_path) -> None:
    portable = pickle.loads(pickle.dumps(PortableEncoder(model)))
    for max_length in (8, 32):  # truncation included
        expected = model.tokenizer(TITLES, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        got = portable.tokenizer(TITLES, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        for name in expected:
            assert np.array_equal(got[name].numpy(), expected[name].numpy()), (name, max_length)
    np.testing.assert_allclose(encode_texts(portable, TITLES * 3, 32, "cpu", 4), encode_texts(model, TITLES * 3, 32, "cpu", 4), atol=1e-5)


def test_the_portable_encoder_loads_without_sentence_transformers(model, tmp_path) -> None:
    (tmp_path / "encoder.pkl").write_bytes(pickle.dumps(PortableEncoder(model)))
    reference = encode_texts(model, TITLES, 32, "cpu", 8)
    np.save(tmp_path / "reference.npy", reference)
    script = f"""
import pickle, sys
import numpy as np
from ecomrec.encoders import encode_texts
encoder = pickle.loads(open({str(tmp_path / 'encoder.pkl')!r}, 'rb').read())
vectors = encode_texts(encoder, {TITLES!r}, 32, "cpu", 8)
assert np.abs(vectors - np.load({str(tmp_path / 'reference.npy')!r})).max() < 1e-5
print("sentence_transformers" in sys.modules, "transformers" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
