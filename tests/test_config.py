"""Configs validate, round-trip through dicts and hash stably."""

from __future__ import annotations

import pytest

from ecomrec.config import (ALSConfig, BiEncoderConfig, CrossEncoderConfig, ItemKNNConfig, PopularityConfig, ProtocolConfig,
                            RepurchaseConfig, RerankConfig)

ALL = (ALSConfig, ItemKNNConfig, PopularityConfig, ProtocolConfig, RepurchaseConfig)


@pytest.mark.parametrize("cls", ALL)
def test_round_trip(cls) -> None:
    config = cls()
    assert cls.from_dict(config.to_dict()) == config
    assert config.config_hash() == cls.from_dict(config.to_dict()).config_hash()


def test_nested_and_tuple_fields_round_trip() -> None:
    config = RepurchaseConfig(popularity=PopularityConfig(window_days=7))
    assert config.to_dict() == {"popularity": {"window_days": 7}}
    assert RepurchaseConfig.from_dict(config.to_dict()) == config
    protocol = ProtocolConfig(ks=(10, 50))
    assert ProtocolConfig.from_dict(protocol.to_dict()).ks == (10, 50)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ALSConfig(factors=0), "factors"),
        (lambda: ALSConfig(weighting="tfidf"), "weighting"),
        (lambda: ALSConfig(device="tpu"), "device"),
        (lambda: ItemKNNConfig(b=2.0), "b"),
        (lambda: PopularityConfig(window_days=0), "window_days"),
        (lambda: ProtocolConfig(ks=(20, 50)), "ks"),
        (lambda: BiEncoderConfig(warmup_ratio=1.0), "warmup_ratio"),  # the trainer would read 1.0 as one step
        (lambda: RerankConfig(cutoffs=1), "cutoffs"),
        (lambda: RerankConfig(text=True, text_join="joint", cross_encoder=CrossEncoderConfig(subtract_item_prior=True)),
         "subtract_item_prior"),
    ],
)
def test_invalid_values_name_the_field(build, field) -> None:
    with pytest.raises(ValueError, match=field):
        build()


def test_unknown_keys_and_hash_changes() -> None:
    with pytest.raises(ValueError, match="no field"):
        ALSConfig.from_dict({"factor": 3})
    assert ALSConfig().config_hash() != ALSConfig(factors=7).config_hash()
    assert ALSConfig().replace(factors=7) == ALSConfig(factors=7)
