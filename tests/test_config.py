"""Configs validate, round-trip through dicts and hash stably."""

from __future__ import annotations

import pytest

from ecomrec.config import (ALSConfig, BiEncoderConfig, CrossEncoderConfig, FusionConfig, ItemKNNConfig, PopularityConfig,
                            ProtocolConfig, RepurchaseConfig, RerankConfig)

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
        (lambda: CrossEncoderConfig(layers=3, joined_layers=4), "joined_layers"),
        (lambda: ALSConfig(alpha=True), "alpha"),  # a bool is not a number
        (lambda: ALSConfig(regularization="3"), "regularization"),  # nor is a string
        (lambda: ALSConfig(factors=8.0), "factors"),  # an int field takes ints only
        (lambda: RerankConfig(text="yes"), "text"),
    ],
)
def test_invalid_values_name_the_field(build, field) -> None:
    with pytest.raises(ValueError, match=field):
        build()


def test_unknown_keys_and_hash_changes() -> None:
    with pytest.raises(ValueError, match="factor"):
        ALSConfig.from_dict({"factor": 3})
    with pytest.raises(ValueError, match="frozen"):
        ALSConfig().factors = 3  # type: ignore[misc]
    assert ALSConfig().config_hash() != ALSConfig(factors=7).config_hash()
    assert ALSConfig().replace(factors=7) == ALSConfig(factors=7)
    with pytest.raises(ValueError, match="factors"):
        ALSConfig().replace(factors=-1)  # replace validates again


def test_configs_saved_with_a_retired_option_load_where_it_changed_nothing() -> None:
    saved = {**RerankConfig(trees=50).to_dict(), "repeat_timing": False}  # what engines saved before
    assert RerankConfig.from_dict(saved) == RerankConfig(trees=50)
    with pytest.raises(ValueError, match="repeat_timing=True: the option was removed.*refit"):
        RerankConfig.from_dict({**saved, "repeat_timing": True})
    with pytest.raises(ValueError, match="repeat_timing=True"):
        RerankConfig(repeat_timing=True)
    fusion = FusionConfig.from_dict({**FusionConfig().to_dict(), "tune_resamples": 1})
    assert fusion == FusionConfig() and "tune_resamples" not in fusion.to_dict()
    with pytest.raises(ValueError, match="tune_resamples=16"):
        FusionConfig(tune_resamples=16)


def test_engine_config_round_trips_through_toml() -> None:
    from ecomrec.config import EngineConfig

    config = EngineConfig(use_reranker=False, rerank=RerankConfig(text=True, cutoffs=3))
    assert EngineConfig.from_toml_text(config.to_toml()) == config
    assert EngineConfig.from_toml_text("[rerank]\ntext = true\n").rerank.text is True  # missing keys keep defaults
    with pytest.raises(ValueError, match="trees"):
        EngineConfig.from_toml_text("[rerank]\ntrees = 0\n")
