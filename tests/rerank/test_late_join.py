"""The late-join cross-encoder: cached item states give the same logits as reading each pair alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecomrec.config import CrossEncoderConfig
from ecomrec.rerank.late_join import LateJoinCrossEncoder
from ecomrec.rerank.text_model import TextScorer

pytestmark = pytest.mark.slow

ITEMS = ["red retrospot lunch bag", "blue polkadot mug", "set of 3 cake tins pantry design", "doormat"]
USERS = ["red retrospot cake stand | red retrospot bag", "blue polkadot bowl"]


@pytest.fixture(scope="module")
def scorer() -> TextScorer:
    torch.manual_seed(0)
    out = TextScorer(CrossEncoderConfig(layers=2, user_tokens=24, item_tokens=8, score_batch=4), ITEMS)
    out.device, out.model = "cpu", out._model().eval()
    return out


def test_batched_cached_scores_equal_one_pair_at_a_time(scorer) -> None:
    ids = np.array([[0, 2, 1, -1], [3, 1, 0, 2]])
    batched = scorer.score(USERS, ids)
    assert np.isneginf(batched[0, 3])  # padding
    for row, text in enumerate(USERS):
        for col, item in enumerate(ids[row]):
            if item < 0:
                continue
            model = scorer.model
            with torch.inference_mode():
                user = model.encode_users(model.tokenize_users([text]))
                alone = model.encode_items(model.tokenize_items([ITEMS[item]]))  # unpadded, no cache
                logit = model(user, alone, torch.tensor([0]), torch.tensor([0]))
            assert batched[row, col] == pytest.approx(float(logit), abs=1e-4), (row, col)


def test_budgets_and_layers_are_checked() -> None:
    with pytest.raises(ValueError, match="layers"):
        LateJoinCrossEncoder(None, layers=1, user_tokens=16, item_tokens=8)
    with pytest.raises(ValueError, match="positions"):
        LateJoinCrossEncoder(None, layers=2, user_tokens=500, item_tokens=16)
    model = LateJoinCrossEncoder(None, layers=2, user_tokens=16, item_tokens=8, n_features=3)
    tokens = model.tokenize_items(["a very long product title that runs well past the budget of eight tokens"])
    assert tokens["input_ids"].shape[1] == 8 and tokens["input_ids"][0, -1] == model.tokenizer.sep_token_id
    users = model.encode_users(model.tokenize_users(["mug"]))
    with pytest.raises(ValueError, match="features"):
        model(users, model.encode_items(tokens), torch.tensor([0]), torch.tensor([0]))
