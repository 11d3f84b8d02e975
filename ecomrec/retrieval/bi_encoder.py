"""Text retrieval: a fine-tuned sentence-transformers bi-encoder over item titles.

A user is their history as text (recent distinct titles, newest first), an item its title; both
are embedded by one model and matched by cosine through a VectorIndex, so cold items (listed,
never bought) and free-text search queries take the same path.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.config import BiEncoderConfig, IndexConfig
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.text import clean_text, history_text
from ecomrec.device import resolve_device
from ecomrec.encoders import (
    RoleEncoder, embedding_dimension, encode_texts, load_sentence_transformer, model_fingerprint, text_hashes, traced_for_inference,
)
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.index import EmbeddingStore, ShardedIndex, VectorIndex, load_index, reused_shards
from ecomrec.index.validation import build_checked, served_score_floor
from ecomrec.retrieval.base import Query, ScoringRetriever, as_dataset, exclusions, item_indices
from ecomrec.candidates import Candidates, top_k
from ecomrec.metrics import hits, recall
from ecomrec.retrieval.pairs import NextItemPairs, next_item_pairs

logger = logging.getLogger(__name__)

#: Subfolder of a saved retriever with its catalog's title vectors (an EmbeddingStore).
EMBEDDINGS = "embeddings"
#: Items per Parquet partition of that store (about 150 MB of 384-d float32 vectors).
STORE_PARTITION_ITEMS = 100_000


@dataclasses.dataclass
class _Validation:
    """Held-out users of the training data's last days: their queries, seen items, new targets."""

    users: np.ndarray
    queries: list[str]
    seen: sp.csr_matrix
    targets: sp.csr_matrix
    start: pd.Timestamp
    ranked: np.ndarray  # the items ranked: every item sold in the training data
    ranked_texts: list[str]  # their titles


class BiEncoderRetriever(ScoringRetriever):
    """Fine-tuned bi-encoder retrieval (history text → item title), searched through a VectorIndex.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> model = BiEncoderRetriever(fine_tune=False, layers=1, show_progress=False).fit(synthetic(seed=0))
    >>> hits = model.search("red retrospot lunch bag", k=3)
    >>> hits.item_ids.shape
    (1, 3)
    """

    name = "bi_encoder"
    config_class = BiEncoderConfig
    config: BiEncoderConfig

    def __init__(self, config: BiEncoderConfig | None = None, *, show_progress: bool | None = None, **kwargs: Any) -> None:
        super().__init__(config, show_progress=show_progress, **kwargs)
        self.training_log_: list[dict[str, float]] = []
        self.validation_: _Validation | None = None
        self.trained_until_: pd.Timestamp | None = None  # the last purchase fine-tuning read
        self.kept_start_: str | None = None  # why a warm refit kept its start weights untrained

    # ------------------------------------------------------------------ fit
    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None, *,
            start_from: BiEncoderRetriever | None = None, recent_after: pd.Timestamp | None = None,
            replay: float = 1.0) -> BiEncoderRetriever:
        """Fine-tune on ``data`` (unless ``fine_tune=False``), embed its catalog and index it.
        ``start_from``: a bi-encoder of the same base model and layers, fine-tuned earlier, whose
        weights (left unchanged) training continues from instead of the base model's; where the
        weights stay as they were, its title vectors are reused instead of encoded again.

        ``recent_after`` (a warm refit; ``start_from`` trained up to that time): train on the pairs
        after it plus ``replay`` times as many older ones, and validate on users' purchases after it
        only, which ``start_from`` never read, so keeping its weights is judged fairly (they stay
        unless continued training beats them). Too few purchases after it keep them too."""
        data = as_dataset(data, item_texts)
        if self.config.fine_tune and len(data) and data.start == data.end:
            raise ValueError("fine-tuning validates on the last days of the data, and these purchases carry no times "
                             "(a matrix?): pass fine_tune=False, or fit on a Dataset with timestamps")
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.device_ = resolve_device(None if cfg.device == "auto" else cfg.device)
        if start_from is None:
            self.model_ = load_sentence_transformer(cfg.base_model, self.device_, cfg.layers)
        else:
            if getattr(start_from, "model_", None) is None:
                raise NotFittedError("start_from")
            if (start_from.config.base_model, start_from.config.layers) != (cfg.base_model, cfg.layers):
                raise ValueError(f"start_from is a {start_from.config.base_model!r} bi-encoder with {start_from.config.layers} "
                                 f"layers; this one is {cfg.base_model!r} with {cfg.layers}")
            self.model_ = copy.deepcopy(start_from.model_).to(self.device_)
        if recent_after is not None and start_from is None:
            raise ValueError("recent_after continues a fine-tuned model: pass the one trained up to then as start_from")
        self._remember(data, data.user_items("counts"))
        texts = [str(t) for t in data.item_texts]
        self._set_histories(data.user_histories(cfg.history_items))
        self.training_log_ = self._fine_tune(data, texts, recent_after, replay) if cfg.fine_tune else []
        # the last purchase the weights learned from: the start's where training did not replace them
        trained = cfg.fine_tune and _beat_start(self.training_log_)
        self.trained_until_ = data.end if trained else (start_from.trained_until_ if start_from is not None else None)
        self._prepare_inference()
        self.titles_ = self._title_vectors(texts, start_from)
        self.index_ = self._build_index(self.titles_.vectors, np.arange(len(texts)))
        return self

    def _title_vectors(self, texts: list[str], start_from: BiEncoderRetriever | None) -> TitleVectors:
        """Vectors of ``texts``: ``start_from``'s where it holds the same weights and the title, else encoded."""
        if start_from is None or getattr(start_from, "titles_", None) is None or start_from.model_hash_ != self.model_hash_:
            return TitleVectors(texts, self.encode_titles(texts))
        return TitleVectors(texts, start_from.embed_items(texts))  # the same weights: its vectors, fresh ones for new titles

    @property
    def item_texts_(self) -> tuple[str, ...]:
        """The title of each dense item index (listed or not)."""
        return self.titles_.texts

    def _set_histories(self, histories: list[np.ndarray]) -> None:
        self.history_indptr_ = np.r_[0, np.cumsum([len(h) for h in histories])].astype(np.int64)
        self.history_items_ = np.concatenate(histories).astype(np.int64) if histories else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ fine-tuning
    def _fine_tune(self, data: Dataset, texts: list[str], recent_after: pd.Timestamp | None = None,
                   replay: float = 1.0) -> list[dict[str, float]]:
        """Fine-tune on "history → an item bought next" pairs with sentence-transformers' trainer
        (MultipleNegativesRankingLoss, no-duplicates batches, validation recall@100 every ``eval_every``
        steps, early stopping, best checkpoint kept). Returns the validation log (step 0: the starting
        weights); empty when a warm refit had too little new data (``kept_start_`` says why)."""
        import tempfile

        import torch
        from transformers import EarlyStoppingCallback, PrinterCallback

        trainer_cls, arguments_cls, loss_cls = _sentence_transformers_training()
        cfg = self.config
        try:
            valid = self.validation_ = self._validation(data, texts, after=recent_after)
        except ValueError as error:
            if recent_after is None:
                raise
            self.kept_start_ = str(error)
            return []
        pairs = next_item_pairs(data, history_items=cfg.history_items, max_pairs=cfg.max_pairs, seed=cfg.seed,
                                holdout_users=valid.users, holdout_from=valid.start, per_basket=cfg.pairs_per_basket,
                                recent_from=recent_after, replay=replay)
        if len(pairs) < cfg.batch_size:
            message = f"only {len(pairs)} training pairs in the data; need at least batch_size={cfg.batch_size}"
            if recent_after is None:
                raise ValueError(message)
            self.kept_start_ = message
            return []
        zero_shot = self._valid_recall(valid)
        start_state = copy.deepcopy(self.model_.state_dict())
        logger.info("bi-encoder: %d pairs; zero-shot validation recall@100 %.4f", len(pairs), zero_shot)
        # a warm refit's few steps are validated at least twice (a fit's cadence would never check them)
        eval_every = cfg.eval_every if recent_after is None else max(1, min(cfg.eval_every, len(pairs) // cfg.batch_size // 2))
        evaluator = _validation_evaluator(self, valid)
        self.model_.max_seq_length = cfg.query_max_tokens  # anchors; titles are cut to item_max_tokens
        self.model_[0].auto_model.get_input_embeddings().weight.requires_grad_(not cfg.freeze_embeddings)
        on_gpu = self.device_.startswith("cuda")
        with tempfile.TemporaryDirectory(prefix="ecomrec-bi-encoder-") as checkpoints:
            args = arguments_cls(
                output_dir=checkpoints, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate, warmup_steps=float(cfg.warmup_ratio), weight_decay=cfg.weight_decay, max_grad_norm=1.0,
                batch_sampler="no_duplicates", dataloader_drop_last=True, seed=cfg.seed, data_seed=cfg.seed,
                eval_strategy="steps", eval_steps=eval_every, save_strategy="steps", save_steps=eval_every,
                save_total_limit=2, save_only_model=True, load_best_model_at_end=True,
                metric_for_best_model=f"eval_{evaluator.primary_metric}", greater_is_better=True,
                logging_steps=eval_every, report_to="none", disable_tqdm=not self._progress(),
                use_cpu=not on_gpu, bf16=on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            )
            trainer = trainer_cls(model=self.model_, args=args, train_dataset=self._pair_dataset(pairs, texts),
                                  loss=loss_cls(self.model_, scale=cfg.scale), evaluator=evaluator,
                                  callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)])
            trainer.remove_callback(PrinterCallback)  # the library logs through logging, never print()
            trainer.train()
        log = [{"step": 0, "loss": float("nan"), "valid_recall@100": zero_shot, "pairs": len(pairs), "valid_from": str(valid.start)}]
        losses = {row["step"]: row["loss"] for row in trainer.state.log_history if "loss" in row}
        for row in trainer.state.log_history:
            if f"eval_{evaluator.primary_metric}" in row:
                step = int(row["step"])
                log.append({"step": step, "loss": float(losses.get(step, np.nan)), "valid_recall@100": float(row[f"eval_{evaluator.primary_metric}"])})
        if not _beat_start(log):  # fine-tuning never beat the weights it started from
            self.model_.load_state_dict(start_state)
        self.model_.eval()
        return log

    def _pair_dataset(self, pairs: NextItemPairs, titles: list[str]) -> Any:
        """The training pairs as a ``datasets.Dataset``: (anchor, positive) texts."""
        from datasets import Dataset as PairDataset

        cfg, tokenizer = self.config, self.model_.tokenizer
        # The trainer truncates every column at one length: titles are cut to the serving item budget here.
        cut = tokenizer(list(titles), add_special_tokens=False, truncation=True, max_length=cfg.item_max_tokens - 2)["input_ids"]
        items = tokenizer.batch_decode(cut)
        anchors = [history_text([titles[i] for i in history], cfg.history_chars) for history in pairs.histories]
        return PairDataset.from_dict({"anchor": anchors, "positive": [items[i] for i in pairs.positives]})

    def _validation(self, data: Dataset, texts: list[str], after: pd.Timestamp | None = None) -> _Validation:
        """The last ``valid_days`` of ``data`` (from ``after`` when later): users sampled among those
        who buy items new to them there, their histories before it and those new items."""
        cfg = self.config
        start = data.end - pd.Timedelta(days=cfg.valid_days)
        if after is not None and after + pd.Timedelta(microseconds=1) > start:
            start = after + pd.Timedelta(microseconds=1)  # strictly after the last purchase the start model read
        before, window = data.between(None, start), data.between(start, None)
        past, future = before.user_items("binary"), window.user_items("binary")
        new = (future - future.multiply(past)).tocsr()
        new.eliminate_zeros()
        eligible = np.flatnonzero((past.getnnz(axis=1) > 0) & (new.getnnz(axis=1) > 0))
        if not len(eligible):
            raise ValueError(f"no user buys new items from {start} to the end of the training data: cannot validate")
        rng = np.random.default_rng(cfg.seed)
        # after a served model's last purchase the window is short: half its buyers stay to train on
        size = min(cfg.valid_users, len(eligible) if after is None else max(1, len(eligible) // 2))
        users = np.sort(rng.choice(eligible, size=size, replace=False))
        queries = before.history_texts(users, max_items=cfg.history_items, max_chars=cfg.history_chars)
        # Only the items sold in the data are ranked: a big unsold catalog is not encoded at every evaluation.
        ranked = np.flatnonzero((past + future).getnnz(axis=0) > 0)
        return _Validation(users, queries, past[users], new[users], start, ranked, [texts[i] for i in ranked])

    def _valid_recall(self, valid: _Validation, k: int = 100) -> float:
        self.model_.eval()
        items = self._encode(self.model_, valid.ranked_texts, self.config.item_max_tokens)
        queries = self._encode(self.model_, valid.queries, self.config.query_max_tokens)
        scores = np.full((len(valid.queries), valid.seen.shape[1]), -np.inf, dtype=np.float32)
        scores[:, valid.ranked] = queries @ items.T
        seen = valid.seen.tocoo()
        scores[seen.row, seen.col] = -np.inf
        top = top_k(scores, k).item_ids
        return float(recall(hits(top, valid.targets), valid.targets.getnnz(axis=1), k).mean())

    # ------------------------------------------------------------------ encoding
    def _prepare_inference(self) -> None:
        """Fix the serving model: float weights fingerprinted, then (optionally) int8 on the CPU."""
        import torch

        self.model_.eval()
        cfg = self.config
        shape = json.dumps({"layers": cfg.layers, "item": cfg.item_max_tokens, "quantize": cfg.quantize})
        self.model_hash_ = model_fingerprint(self.model_) + "-" + hashlib.sha256(shape.encode()).hexdigest()[:8]
        floats = queries = traced_for_inference(self.model_, self.device_)
        if cfg.quantize == "int8" and self.device_ == "cpu":
            # Queries only: dynamic int8 scales by the whole batch, so a title's vector would depend on its batch-mates.
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(self.model_), {torch.nn.Linear}, dtype=torch.qint8)
            queries = traced_for_inference(quantized, self.device_)
        self._item_serving = RoleEncoder(floats, cfg.item_max_tokens, self.device_, cfg.encode_batch_size)
        self._serving = RoleEncoder(queries, cfg.query_max_tokens, self.device_, cfg.encode_batch_size)

    def _encode(self, model: Any, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        return encode_texts(model, texts, max_tokens, self.device_, self.config.encode_batch_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, d] unit vectors of user-history or search-query texts."""
        self._check_fitted()
        return self._serving.encode(list(texts))

    def encode_titles(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, d] unit vectors of item titles, freshly encoded (each distinct title once),
        never taken from the vectors this retriever holds."""
        distinct = list(dict.fromkeys(texts))
        vectors = self._item_serving.encode(distinct)
        row = {text: r for r, text in enumerate(distinct)}
        return vectors[[row[t] for t in texts]] if len(texts) else vectors

    def embed_items(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, d] unit vectors of item titles: the vectors this retriever serves for
        titles its catalog holds, fresh encodings for any other (nothing is stored)."""
        texts = list(texts)
        vectors, found = self.titles_.lookup(texts)
        if not found.all():
            missing = np.flatnonzero(~found)
            vectors[missing] = self.encode_titles([texts[i] for i in missing])
        return vectors

    def titles_missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` this retriever holds no vector for: what a catalog change encodes."""
        distinct = list(dict.fromkeys(texts))
        return [t for t, found in zip(distinct, self.titles_.lookup(distinct)[1]) if not found]

    def user_texts(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> list[str]:
        """Behaviour as text for each query: fitted histories newest first, or a fresh history's
        items by weight (most bought first)."""
        cfg = self.config
        texts = []
        for row, user in enumerate(users):
            if fresh or user < 0:
                lo, hi = history.indptr[row], history.indptr[row + 1]
                items = history.indices[lo:hi][np.argsort(-history.data[lo:hi], kind="stable")][: cfg.history_items]
            else:
                items = self.history_items_[self.history_indptr_[user] : self.history_indptr_[user + 1]]
            texts.append(history_text([self.item_texts_[i] for i in items], cfg.history_chars))
        return texts

    # ------------------------------------------------------------------ retrieval
    def query_vectors(self, query: Query) -> np.ndarray:
        """float32 [n, dim] the query users' behaviour as text, encoded (what :meth:`retrieve`
        searches with; fusion encodes once for every text source)."""
        return self.encode_queries(self.user_texts(query.users, query.history, query.fresh))

    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        texts = self.user_texts(query.users, query.history, query.fresh)
        return self.candidates_for_texts(texts, query.k, exclude=query.exclude, allow=query.allow, batch_size=batch_size)

    def candidates_for_texts(self, texts: Sequence[str], k: int, *, exclude: Any = None, allow: Any = None,
                             batch_size: int = 1024) -> Candidates:
        """Top ``k`` items for each behaviour-as-text query (``exclude``/``allow`` as in :meth:`candidates`,
        already in index form: per-query CSR or item indices). The result's ``timings`` has the
        seconds spent encoding and searching."""
        index = self.index_  # one reference per call: a concurrent catalog update never mixes into it
        parts, encoding, searching = [], 0.0, 0.0
        for start in range(0, max(len(texts), 1), batch_size):
            rows = slice(start, start + batch_size)
            began = time.perf_counter()
            vectors = self.encode_queries(list(texts[rows]))
            encoded = time.perf_counter()
            rows_exclude = exclude[rows] if sp.issparse(exclude) else exclude
            parts.append(index.search(vectors, k, exclude=rows_exclude, allow=allow))
            encoding, searching = encoding + encoded - began, searching + time.perf_counter() - encoded
        found = Candidates.concat(parts)
        found.timings.update(user_encoding=encoding, search=searching)
        return found

    def candidates_for_vectors(self, vectors: np.ndarray, k: int, *, exclude: Any = None, allow: Any = None,
                               batch_size: int = 1024) -> Candidates:
        """Top ``k`` items for query vectors already encoded (by :meth:`encode_queries`);
        ``exclude``/``allow`` as in :meth:`candidates_for_texts`."""
        index = self.index_
        return Candidates.concat([index.search(vectors[s : s + batch_size], k, allow=allow,
                                               exclude=exclude[s : s + batch_size] if sp.issparse(exclude) else exclude)
                                  for s in range(0, max(len(vectors), 1), batch_size)])

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        vectors = self.encode_queries(self.user_texts(users, history, fresh))
        return vectors @ self.index_vectors_().T

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "index": self.index_.kind_, "device": self.device_}
        if self.training_log_:
            start, best = self.training_log_[0], max(r["valid_recall@100"] for r in self.training_log_)
            out["training"] = {"steps": self.training_log_[-1]["step"], "pairs": start.get("pairs"),
                               "start_valid_recall@100": start["valid_recall@100"], "best_valid_recall@100": best,
                               "weights": "trained" if _beat_start(self.training_log_) else "start (training never beat them)"}
        elif self.kept_start_:
            out["training"] = {"steps": 0, "weights": f"start ({self.kept_start_})"}
        return out

    def index_vectors_(self) -> np.ndarray:
        """float32 [n_items, d] (read-only): the vector of every item's title, by dense index."""
        return self.titles_.vectors

    def search(self, queries: str | Sequence[str], k: int = 10, *, user_ids: Sequence[int] | np.ndarray | None = None,
               exclude: Any = None, allow: Any = None) -> Candidates:
        """Items matching free-text ``queries``; with ``user_ids`` (a dense user per query, -1 for none)
        each query vector moves towards the user's history vector by ``config.personalise``."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        vectors, history = self.search_vectors(queries, user_ids)
        allowed = None if allow is None else item_indices(allow, self.n_items, "allow")
        return self.index_.search(vectors, int(k), exclude=exclusions(exclude, history, self.n_items), allow=allowed)

    def search_vectors(self, queries: str | Sequence[str],
                       user_ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, sp.csr_matrix]:
        """The query vectors :meth:`search` searches with (unit length, personalised for known
        users) and each query's user history (CSR [queries, n_items]; empty rows for no user)."""
        self._check_fitted()
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts or any(not isinstance(t, str) or not clean_text(t) for t in texts):
            raise ValueError("search queries must be non-empty strings")
        users = np.full(len(texts), -1, dtype=np.int64) if user_ids is None else np.asarray(user_ids, dtype=np.int64).reshape(-1)
        if len(users) != len(texts):
            raise ValueError(f"{len(users)} user_ids for {len(texts)} queries")
        known = users >= 0
        history = sp.csr_matrix((len(texts), self.n_items), dtype=np.float32)
        if known.any():
            history = sp.vstack([self._history(users[[r]], None) if known[r] else history[r] for r in range(len(texts))]).tocsr()
        vectors = self.encode_queries([clean_text(t) for t in texts])
        if known.any():
            personal = self.encode_queries(self.user_texts(users[known], history[known], False))
            mixed = vectors[known] + self.config.personalise * personal
            vectors[known] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        return vectors, history

    # ------------------------------------------------------------------ catalog changes
    def _build_index(self, vectors: np.ndarray, item_ids: np.ndarray, previous: Any = None,
                     config: IndexConfig | None = None) -> VectorIndex | ShardedIndex:
        """A validated index over title vectors (``previous``: the one it replaces, whose
        trained structure and unchanged shards a sharded index keeps)."""
        sample = np.random.default_rng(self.config.seed).choice(len(vectors), size=min(100, len(vectors)), replace=False)
        return build_checked(config or self.config.index, vectors, item_ids, vectors[sample], previous=previous)

    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> BiEncoderRetriever:
        """A copy serving ``catalog`` (``catalog_change_``: counts and seconds); this one is left as it was.
        Unlisted items stop being returned; new ids are appended to the item map; new and changed titles
        are encoded unless the catalog carries their vectors for this model (``Catalog.encoded``, e.g.
        from Ray workers); titles this retriever holds a vector for keep it. The new index is validated."""
        self._check_fitted()
        assert self.items_ is not None
        start = time.perf_counter()
        ids, titles = list(catalog.item_ids), list(catalog.texts)
        if not ids:
            raise ValueError("the catalog is empty: nothing to index")
        known = self.items_.positions(ids) >= 0
        new_ids = [i for i, k in zip(ids, known) if not k]
        item_map = IdMap(list(self.items_.ids) + new_ids) if new_ids else self.items_
        dense = item_map.index(ids)
        all_texts = list(self.titles_.texts) + [""] * len(new_ids)
        changed = sum(1 for d, t in zip(dense, titles) if d < len(self.titles_) and all_texts[d] != t)
        for d, t in zip(dense, titles):
            all_texts[d] = t
        titles_, encoded = self._titles(all_texts, catalog.encoded.get(self.model_hash_, {}))
        config = self.config if shards is None else self.config.replace(index=self.config.index.replace(shards=shards))
        index = self._build_index(titles_.vectors[dense], dense.astype(np.int64), previous=self.index_, config=config.index)
        user_items = self.user_items_
        if new_ids:
            user_items = sp.csr_matrix((user_items.data, user_items.indices, user_items.indptr), shape=(user_items.shape[0], len(item_map)))
        return self.replaced(config=config, items_=item_map, user_items_=user_items, titles_=titles_, index_=index, catalog_change_={
            "listed": len(ids), "new": len(new_ids), "changed": changed, "removed": int(len(item_map) - len(ids)), "encoded": encoded,
            "reused_shards": reused_shards(index), "seconds": time.perf_counter() - start})

    def with_interactions(self, data: Dataset) -> BiEncoderRetriever:
        """A copy that reads each user's history as of ``data`` (the same model: nothing is
        trained). Items ``data`` adds are titled from its catalog, encoded and indexed."""
        self._check_extends(data)
        assert self.items_ is not None
        titles, index = self.titles_, self.index_
        if len(data.items) > len(self.items_):
            titles, _ = self._titles([*self.titles_.texts, *map(str, data.item_texts[len(self.items_):])], {})
            listed = np.union1d(self.index_.item_ids, np.arange(len(self.items_), len(data.items)))
            index = self._build_index(titles.vectors[listed], listed, previous=self.index_)
        out = self.replaced(user_items_=sp.csr_matrix(data.user_items("counts"), dtype=np.float32), users_=data.users,
                            items_=data.items, titles_=titles, index_=index, catalog_change_={})
        out._set_histories(data.user_histories(self.config.history_items))
        return out

    def _titles(self, texts: list[str], encoded: Mapping[str, np.ndarray]) -> tuple[TitleVectors, int]:
        """New :class:`TitleVectors` for ``texts`` (this retriever's, then ``encoded``'s, then
        fresh encodings) and how many distinct titles were encoded here."""
        vectors, found = self.titles_.lookup(texts)
        for row in np.flatnonzero(~found):
            if texts[row] in encoded:
                vectors[row], found[row] = encoded[texts[row]], True
        todo = np.flatnonzero(~found)
        vectors[todo] = self.encode_titles([texts[i] for i in todo])
        return TitleVectors(texts, vectors, previous=self.titles_), len({texts[i] for i in todo})

    def verify_items(self, items: np.ndarray | Sequence[int], expected: np.ndarray | None = None) -> None:
        """Check that for ``items`` (dense indices of listed items) the vector held and the one indexed
        are both the vector of the item's title: ``expected`` (float [n, d], e.g. what the published
        snapshot served), else a fresh encoding. Raises :class:`ArtifactError` naming the first failure."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if not len(items):
            return
        texts = [self.titles_.texts[i] for i in items]
        reference = self.encode_titles(texts) if expected is None else np.asarray(expected, dtype=np.float32)
        held = np.einsum("ij,ij->i", reference, self.titles_.vectors[items])
        indexed = self.index_.item_scores(reference, items)
        floor = served_score_floor(self.index_)
        bad = np.flatnonzero(~(held >= 1.0 - 1e-4) | ~(indexed >= floor))
        if len(bad):
            row = int(bad[0])
            assert self.items_ is not None
            what = "a fresh encoding of its title" if expected is None else "the vector its title was served with before"
            raise ArtifactError(f"item {self.items_.ids[items[row]]!r} ({texts[row]!r}): the {self.name} retriever holds a "
                                f"vector of cosine {held[row]:.4f} to {what} and its index one of score {indexed[row]:.4f} "
                                f"(expected >= 0.9999 and >= {floor:.4f}); {len(bad)} of {len(items)} items checked fail")

    def served_vectors(self, item_ids: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, d] the vector this retriever holds for each external id, bool [n] found):
        found where it knows the item and holds it under the same title."""
        assert self.items_ is not None
        dense = self.items_.positions(item_ids)
        found = dense >= 0
        found[found] = [self.titles_.texts[d] == t for d, t in zip(dense[found], np.asarray(texts, dtype=object)[found])]
        vectors = np.zeros((len(dense), self.titles_.vectors.shape[1]), np.float32)
        vectors[found] = self.titles_.vectors[dense[found]]
        return vectors, found

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        return {"history_indptr": self.history_indptr_, "history_items": self.history_items_}

    def _write(self, folder: Path, arrays: dict[str, np.ndarray]) -> None:
        super()._write(folder, arrays)
        (folder / "item_texts.json").write_text(json.dumps(list(self.titles_.texts)), encoding="utf-8")
        (folder / "training_log.json").write_text(json.dumps(self.training_log_), encoding="utf-8")
        until = None if self.trained_until_ is None else str(self.trained_until_)
        (folder / "trained.json").write_text(json.dumps({"trained_until": until, "kept_start": self.kept_start_}), encoding="utf-8")
        (folder / "model_hash.txt").write_text(self.model_hash_, encoding="utf-8")
        self.model_.save(str(folder / "model"))
        self.index_.save(folder / "index", items=self.items_, facts={"model": self.model_hash_})
        self._embedding_store(folder, len(self.titles_)).put(list(self.items_.ids), list(self.titles_.texts), self.titles_.vectors)

    def weights_only(self) -> BiEncoderRetriever:
        """A copy holding the model, its title vectors and training date, and nothing of any
        customer (what an engine keeps of its examples' bi-encoder for the next warm refit)."""
        out = type(self)(self.config, show_progress=self.show_progress)
        kept = ("device_", "model_", "model_hash_", "_serving", "_item_serving", "titles_", "trained_until_", "kept_start_")
        out.__dict__.update({name: self.__dict__[name] for name in kept if name in self.__dict__})
        return out

    def save_weights(self, folder: Path) -> None:
        """Write the model and the last purchase it was trained on, nothing about any user or item:
        all a later fit needs to continue from it (``start_from``)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save(str(folder / "model"))
        until = None if self.trained_until_ is None else str(self.trained_until_)
        (folder / "weights.json").write_text(json.dumps({"trained_until": until, "model_hash": self.model_hash_}), encoding="utf-8")

    @classmethod
    def load_weights(cls, folder: Path, config: BiEncoderConfig) -> BiEncoderRetriever:
        """The model :meth:`save_weights` wrote, ready to be a ``start_from`` (fitted to no data)."""
        out = cls(config)
        out.device_ = resolve_device(None if config.device == "auto" else config.device)
        try:
            facts = json.loads((folder / "weights.json").read_text(encoding="utf-8"))
            out.model_ = load_sentence_transformer(folder / "model", out.device_)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{folder}: cannot read the bi-encoder's weights: {exc}") from exc
        out._prepare_inference()
        if out.model_hash_ != facts.get("model_hash"):
            raise ArtifactError(f"{folder}: model weights do not match the saved fingerprint (corrupt or replaced)")
        out.trained_until_ = None if facts.get("trained_until") is None else pd.Timestamp(facts["trained_until"])
        return out

    def _embedding_store(self, folder: Path, n_items: int) -> EmbeddingStore:
        """The catalog's title vectors beside a saved retriever (readable as plain Parquet)."""
        return EmbeddingStore(folder / EMBEDDINGS, model=self.model_hash_, dim=embedding_dimension(self.model_),
                              partitions=1 + n_items // STORE_PARTITION_ITEMS)

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        self.device_ = resolve_device(None if self.config.device == "auto" else self.config.device)
        self.history_indptr_, self.history_items_ = arrays["history_indptr"], arrays["history_items"]
        texts = json.loads((folder / "item_texts.json").read_text(encoding="utf-8"))
        self.training_log_ = json.loads((folder / "training_log.json").read_text(encoding="utf-8"))
        trained = json.loads((folder / "trained.json").read_text(encoding="utf-8")) if (folder / "trained.json").is_file() else {}
        self.trained_until_ = None if trained.get("trained_until") is None else pd.Timestamp(trained["trained_until"])
        self.kept_start_ = trained.get("kept_start")
        if not (folder / "model").is_dir():
            raise ArtifactError(f"{folder}: the model folder is missing")
        self.model_ = load_sentence_transformer(folder / "model", self.device_)
        self._prepare_inference()
        expected = (folder / "model_hash.txt").read_text(encoding="utf-8").strip()
        if self.model_hash_ != expected:
            raise ArtifactError(f"{folder}: model weights do not match the saved fingerprint (corrupt or replaced)")
        if self.items_ is None or len(self.items_) != len(texts):
            raise ArtifactError(f"{folder}: the item map and the titles disagree (re-save the retriever)")
        ids, hashes, vectors = self._embedding_store(folder, len(texts)).read_all()
        self.titles_ = TitleVectors(texts, _stored_vectors(self.items_, texts, ids, hashes, vectors, folder))
        self.index_ = load_index(folder / "index", expect={"model": self.model_hash_})


class TitleVectors:
    """Each item's title and that title's vector, by dense item index; never changed once built (a
    catalog change makes a new one, so a snapshot in service keeps its own). :meth:`lookup` finds a
    title's vector wherever an item holds that title, and with ``previous`` also among the titles the
    previous catalog held and this one does not (kept for one change): an unchanged, repeated or
    restored title is never encoded again."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, *, previous: TitleVectors | None = None) -> None:
        vectors = np.array(vectors, dtype=np.float32)  # a copy of its own
        if len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} titles")
        vectors.setflags(write=False)
        self.texts: tuple[str, ...] = tuple(str(t) for t in texts)
        self.vectors = vectors
        self._row = {h: r for r, h in reversed(list(enumerate(text_hashes(list(self.texts)))))}  # first item of each title
        retired = [] if previous is None else [(h, r) for h, r in previous._row.items() if h not in self._row]
        self._retired_row = {h: n for n, (h, _) in enumerate(retired)}
        self._retired = previous.vectors[[r for _, r in retired]] if retired else np.zeros((0, vectors.shape[1]), np.float32)
        self._retired.setflags(write=False)

    def __len__(self) -> int:
        return len(self.texts)

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, d] a new array of the vector held for each title, zeros where none;
        bool [n] which titles have one)."""
        hashes = text_hashes(list(texts))
        out = np.zeros((len(texts), self.vectors.shape[1]), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        for held, rows_of in ((self.vectors, self._row), (self._retired, self._retired_row)):
            rows = np.fromiter((rows_of.get(h, -1) for h in hashes), dtype=np.int64, count=len(texts))
            new = (rows >= 0) & ~found
            out[new], found[new] = held[rows[new]], True
        return out, found


def _stored_vectors(items: IdMap, texts: list[str], ids: np.ndarray, hashes: np.ndarray, vectors: np.ndarray,
                    folder: Path) -> np.ndarray:
    """float32 [n_items, d]: each item's vector from a saved embedding store, by dense index;
    ArtifactError when the store lacks an item or holds it for another title."""
    row_of = {str(i): r for r, i in enumerate(ids)}
    rows = np.fromiter((row_of.get(str(i), -1) for i in items.ids), dtype=np.int64, count=len(items))
    expected = text_hashes(texts)
    stored = np.where(rows >= 0, hashes[np.maximum(rows, 0)] if len(hashes) else "", "")
    bad = np.flatnonzero((rows < 0) | (stored != expected))
    if len(bad):
        item = items.ids[bad[0]]
        raise ArtifactError(f"{folder}: the embedding store has no vector for item {item!r} with its title {texts[bad[0]]!r} "
                            f"({len(bad)} items): the folder is damaged or mixed; re-save it")
    return vectors[rows]


def _beat_start(log: list[dict[str, float]]) -> bool:
    """Whether a fine-tune's validation log (step 0: the start weights) has a later step above its start."""
    return len(log) > 1 and max(r["valid_recall@100"] for r in log[1:]) > log[0]["valid_recall@100"]


def _validation_evaluator(retriever: BiEncoderRetriever, valid: _Validation) -> Any:
    """The trainer's evaluator: recall@100 of new items for the held-out validation users
    (a sentence-transformers evaluator, so the trainer picks the best checkpoint by it)."""
    try:
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator

    class ValidationRecall(BaseEvaluator):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric, self.greater_is_better = "validation_recall@100", True

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
            recall = retriever._valid_recall(valid)
            logger.info("bi-encoder step %d: validation recall@100 %.4f", steps, recall)
            return {self.primary_metric: recall}

    return ValidationRecall()


def _sentence_transformers_training() -> tuple[Any, Any, Any]:
    """Trainer, training arguments and MultipleNegativesRankingLoss (sentence-transformers >= 6
    moved them; earlier versions keep the old paths)."""
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    return SentenceTransformerTrainer, SentenceTransformerTrainingArguments, MultipleNegativesRankingLoss
