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


def test_attention_through_sdpa_equals_the_written_out_formula() -> None:
    """The join's attention runs through torch's scaled_dot_product_attention: the same outputs
    as softmax(q kᵀ / √d + mask) v per head, to 1e-5, masked keys ignored."""
    import math

    torch.manual_seed(0)
    model = LateJoinCrossEncoder(None, layers=2, user_tokens=16, item_tokens=8).eval()
    pairs, q_len, k_len, hidden, heads = 5, 6, 20, 384, model.heads
    query, keys, values = torch.randn(pairs, q_len, hidden), torch.randn(pairs, k_len, hidden), torch.randn(pairs, k_len, hidden)
    mask = torch.rand(pairs, k_len) > 0.3
    mask[:, 0] = True
    got = model._attend(query, keys, values, mask)

    def split(x):  # type: ignore[no-untyped-def]
        return x.view(pairs, x.shape[1], heads, hidden // heads).transpose(1, 2)

    scores = split(query) @ split(keys).transpose(-1, -2) / math.sqrt(hidden // heads)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    expected = (torch.softmax(scores, dim=-1) @ split(values)).transpose(1, 2).reshape(pairs, q_len, hidden)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    moved = values.clone()
    moved[~mask] = 1e3  # what masked tokens hold never reaches the output
    torch.testing.assert_close(model._attend(query, keys, moved, mask), got, atol=1e-5, rtol=1e-5)


def test_budgets_and_layers_are_checked() -> None:
    with pytest.raises(ValueError, match="layers"):
        LateJoinCrossEncoder(None, layers=1, user_tokens=16, item_tokens=8)
    with pytest.raises(ValueError, match="positions"):
        LateJoinCrossEncoder(None, layers=2, user_tokens=500, item_tokens=16)
    model = LateJoinCrossEncoder(None, layers=2, user_tokens=16, item_tokens=8)
    tokens = model.tokenize_items(["a very long product title that runs well past the budget of eight tokens"])
    assert tokens["input_ids"].shape[1] == 8 and tokens["input_ids"][0, -1] == model.tokenizer.sep_token_id


def test_full_attention_equals_plain_bert_reading_the_pair_together() -> None:
    """``joined_layers == layers``: every kept layer reads user and item tokens together, exactly
    as the base BERT over the concatenated pair (same positions and token types)."""
    from transformers import AutoModel

    from ecomrec.encoders import resolve_model_path

    torch.manual_seed(0)
    model = LateJoinCrossEncoder(None, layers=3, user_tokens=24, item_tokens=8, joined_layers=3).eval()
    assert len(model.lower.encoder.layer) == 0 and len(model.middle) == 2
    plain = AutoModel.from_pretrained(resolve_model_path(None), add_pooling_layer=False).eval()
    plain.encoder.layer = plain.encoder.layer[:3]
    user_tokens, item_tokens = model.tokenize_users([USERS[0]]), model.tokenize_items([ITEMS[2]])
    with torch.inference_mode():
        logit = model(model.encode_users(user_tokens), model.encode_items(item_tokens), torch.tensor([0]), torch.tensor([0]))
        n_user, n_item = user_tokens["input_ids"].shape[1], item_tokens["input_ids"].shape[1]
        hidden = plain(
            input_ids=torch.cat([user_tokens["input_ids"], item_tokens["input_ids"]], dim=1),
            attention_mask=torch.cat([user_tokens["attention_mask"], item_tokens["attention_mask"]], dim=1),
            token_type_ids=torch.cat([torch.zeros(1, n_user), torch.ones(1, n_item)], dim=1).long(),
            position_ids=torch.cat([torch.arange(n_user), 24 + torch.arange(n_item)])[None],
        ).last_hidden_state
        expected = model.head(hidden[:, n_user:].mean(dim=1)).squeeze(-1)
    assert float(logit) == pytest.approx(float(expected), abs=1e-4)
    late = LateJoinCrossEncoder(None, layers=3, user_tokens=24, item_tokens=8).eval()
    late.head.load_state_dict(model.head.state_dict())
    with torch.inference_mode():  # the late join reads the pair apart below the top: another score
        apart = late(late.encode_users(user_tokens), late.encode_items(item_tokens), torch.tensor([0]), torch.tensor([0]))
    assert abs(float(apart) - float(logit)) > 1e-3


def test_a_full_attention_scorer_saves_and_loads_with_its_joined_layers(tmp_path) -> None:
    config = CrossEncoderConfig(layers=2, joined_layers=2, user_tokens=24, item_tokens=8, score_batch=4)
    torch.manual_seed(0)
    scorer = TextScorer(config, ITEMS)
    scorer.device, scorer.model = "cpu", scorer._model().eval()
    ids = np.array([[0, 2, 1, -1], [3, 1, 0, 2]])
    scorer.save(tmp_path)
    loaded = TextScorer.load(tmp_path, config, ITEMS)
    assert len(loaded.model.middle) == 1
    np.testing.assert_allclose(loaded.score(USERS, ids), scorer.score(USERS, ids), atol=1e-5)
    with pytest.raises(ValueError, match="joined_layers"):
        CrossEncoderConfig(layers=2, joined_layers=3)
