"""The joint text + behaviour network: behaviour dropout makes it learn the text too.

A planted shop: each user's history is about one colour and they buy the candidates of the next
colour (red histories buy blue: nothing a zero-shot model matches). One collaborative feature
knows the answer, noisily; it is hidden on a share of training rows (behaviour dropout), where
only the text can rank. Scored as cold items (never bought: the features carry nothing), the
network must rank by what it learned from the text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecomrec.candidates import Candidates
from ecomrec.config import CrossEncoderConfig
from ecomrec.metrics import ndcg_from_labels
from ecomrec.rerank.examples import Examples
from ecomrec.rerank.text_model import BehaviourInput, TextScorer, _listwise_loss

pytestmark = pytest.mark.slow

COLOURS = ["red", "blue", "green", "yellow"]
THINGS = ["mug", "bag", "candle", "tin", "cushion", "lamp", "bowl", "clock"]
ITEMS = [f"{c} {t}" for c in COLOURS for t in THINGS]
COLD = 2  # feature column: the item's buyer count (0 = never bought)


def _planted(users: int, seed: int, cold: bool = False) -> Examples:
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, len(COLOURS), users)
    ids = np.stack([rng.permutation(len(ITEMS))[:12] for _ in range(users)])
    labels = ids // len(THINGS) == (colour[:, None] + 1) % len(COLOURS)  # red histories buy blue: no zero-shot match
    texts = [" | ".join(f"{COLOURS[c]} {t}" for t in rng.choice(THINGS, 3, replace=False)) for c in colour]
    features = np.stack([labels + rng.normal(0, 0.7, labels.shape),  # knows the answer, noisily
                         rng.normal(0, 1, labels.shape),
                         np.zeros(labels.shape) if cold else np.ones(labels.shape)], axis=-1).astype(np.float32)
    candidates = Candidates(ids, -np.arange(12, dtype=np.float32)[None].repeat(users, 0))
    return Examples(pd.Timestamp("2024-01-01"), np.arange(users), texts, candidates, labels, features, np.zeros(users, bool))


def _fit(dropout: float, epochs: int = 3) -> TextScorer:
    train, valid = _planted(240, 0), _planted(60, 1)
    config = CrossEncoderConfig(layers=2, user_tokens=24, item_tokens=6, users_per_batch=8, list_size=8, learning_rate=1e-4,
                                epochs=epochs, eval_every=10, patience=5, behaviour_dropout=dropout, device="cpu")
    rows = train.features[train.candidates.item_ids >= 0]
    return TextScorer(config, ITEMS, behaviour=BehaviourInput.fit(rows, COLD), listwise=True).fit(train, valid)


def _ndcg(scorer: TextScorer, examples: Examples) -> float:
    scores = scorer.score(examples.texts, examples.candidates.item_ids, examples.features)
    return ndcg_from_labels(scores, examples.labels, examples.candidates.item_ids >= 0)


@pytest.fixture(scope="module")
def joint() -> TextScorer:
    return _fit(dropout=0.4)


def test_behaviour_dropout_teaches_the_text_so_cold_items_are_ranked(joint) -> None:
    warm, cold = _planted(80, 2), _planted(80, 2, cold=True)
    assert _ndcg(joint, warm) > 0.95  # with behaviour: the feature
    assert _ndcg(joint, cold) > 0.9  # without: the planted text signal alone (chance is ~0.45)
    other = cold.features.copy()
    other[..., :COLD] = 7.0  # a cold item's other feature values do not matter
    np.testing.assert_allclose(joint.score(cold.texts, cold.candidates.item_ids, other),
                               joint.score(cold.texts, cold.candidates.item_ids, cold.features), atol=1e-5)


def test_training_hides_the_configured_share_of_rows(monkeypatch) -> None:
    hidden: list[np.ndarray] = []
    original = BehaviourInput.__call__

    def spy(self, features, hide=None):  # type: ignore[no-untyped-def]
        if hide is not None:
            hidden.append(hide)
        return original(self, features, hide)

    monkeypatch.setattr(BehaviourInput, "__call__", spy)
    _fit(dropout=0.3, epochs=1)
    share = np.concatenate(hidden).mean()
    assert 0.25 < share < 0.35


def test_the_joint_model_needs_its_features_and_saves_them(joint, tmp_path) -> None:
    warm = _planted(10, 3)
    with pytest.raises(ValueError, match="features"):
        joint.score(warm.texts, warm.candidates.item_ids)
    joint.save(tmp_path)
    loaded = TextScorer.load(tmp_path, joint.config, ITEMS)
    np.testing.assert_allclose(loaded.score(warm.texts, warm.candidates.item_ids, warm.features),
                               joint.score(warm.texts, warm.candidates.item_ids, warm.features), atol=1e-5)


def test_behaviour_input_standardises_and_flags_cold_or_hidden_rows() -> None:
    rows = np.array([[1.0, 10.0, 1.0], [3.0, 30.0, 0.0], [2.0, 20.0, 2.0]], dtype=np.float32)
    behaviour = BehaviourInput.fit(rows, cold_column=2)
    out = behaviour(rows, hide=np.array([False, False, True]))
    assert behaviour.width == 4 and out.shape == (3, 4)
    np.testing.assert_allclose(out[0, :2], (rows[0, :2] - [2, 20]) / rows[:, :2].std(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(out[1:], [[0, 0, 0, 1], [0, 0, 0, 1]])  # cold (0 buyers), hidden


def test_listwise_loss_by_hand() -> None:
    import torch

    logits, labels = torch.tensor([2.0, 0.0, 1.0, 1.0, 5.0]), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    first = -torch.log_softmax(logits[:3], 0)[0]
    second = -torch.log_softmax(logits[3:], 0)[0]
    assert float(_listwise_loss(logits, labels, groups)) == pytest.approx(float((first + second) / 2))
    assert float(_listwise_loss(logits, labels * 0, groups)) == 0.0


def test_whole_lists_hold_every_candidate_and_sampled_lists_keep_their_cap() -> None:
    train = _planted(40, 4)
    train.candidates.item_ids[0, 9:] = -1  # a shorter list (padding)
    with_positives = {r for r in range(40) if train.labels[r][train.candidates.item_ids[r] >= 0].any()}

    def groups(list_size: int, max_pairs: int = 10_000) -> list:
        config = CrossEncoderConfig(layers=2, list_size=list_size, max_pairs=max_pairs, negatives_per_positive=1)
        return TextScorer(config, ITEMS, listwise=True)._training_groups(train)

    whole = groups(0)
    assert {row for row, _, _ in whole} == with_positives and len(whole) == len(with_positives)
    for row, columns, labels in whole:
        assert sorted(columns) == list(np.flatnonzero(train.candidates.item_ids[row] >= 0))
        np.testing.assert_array_equal(labels, train.labels[row, columns])
    capped = [len(c) for _, c, _ in groups(0, max_pairs=30)]
    assert sum(capped) >= 30 > sum(capped[:-1])  # stops at the list that crosses the cap
    for row, columns, labels in groups(4):  # at most 4 // (1 + 1) positives, one negative each
        assert 1 <= labels.sum() <= 2 and len(columns) == 2 * labels.sum() and len(set(columns)) == len(columns)


def test_a_residual_path_starts_at_the_base_model_and_keeps_it_when_it_learns_nothing() -> None:
    """The residual variant's text path adds nothing until it earns it: with a base model that is
    already perfect on validation, early stopping keeps the untrained path, whose output is 0."""
    train, valid = _planted(48, 0), _planted(24, 1)
    config = CrossEncoderConfig(layers=2, user_tokens=24, item_tokens=6, users_per_batch=8, list_size=8, epochs=1,
                                eval_every=2, patience=1, device="cpu")
    scorer = TextScorer(config, ITEMS, listwise=True).fit(train, valid, base=lambda e: np.where(e.labels, 5.0, 0.0))
    assert scorer.log[0]["valid_ndcg@10"] == pytest.approx(1.0) and len(scorer.log) > 1  # it trained, and never beat that
    np.testing.assert_array_equal(scorer.score(valid.texts, valid.candidates.item_ids), 0.0)
