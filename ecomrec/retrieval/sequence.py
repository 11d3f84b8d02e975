"""Sequential behaviour: a causal transformer over each customer's purchase sequence.

SASRec (Kang & McAuley, 2018) read as ecomrec needs it. Each purchase is an item embedding — a
learnt id vector (items sold in the training log only) plus a linear projection of the item's
title vector, so that a new arrival or a never-sold item has one — plus its position and the gap
since the purchase before (log2-spaced day buckets: the timing, not only the order). A causal
``nn.TransformerEncoder`` reads the sequence; the state after the last purchase is the customer's
vector, matched to the item embeddings by inner product through a FAISS index. The state after
each purchase is trained to find an item bought in the ``horizon_days`` after it (the protocol's
target: what is bought next month, not only next), by softmax over the sold items (a uniform
sample of them, shared by a step, in large catalogs); same-day baskets have no order and are
reshuffled each epoch. Training stops early on the ndcg@50 of held-out customers' purchases in
the last ``valid_days``.

Written here rather than taken from RecTools (``SASRecModel``) or Transformers4Rec: both bring
their own dataset formats and trainers (PyTorch Lightning, Merlin), neither joins title vectors
into the item inputs, and neither serves a fresh history or searches an external index; the
model is a few dozen lines around torch's own transformer layers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.candidates import Candidates, top_k
from ecomrec.config import IndexConfig, SequenceConfig
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.device import resolve_device
from ecomrec.exceptions import ArtifactError
from ecomrec.index import ShardedIndex, VectorIndex, load_index, reused_shards
from ecomrec.index.validation import build_checked
from ecomrec.metrics import hits, ndcg
from ecomrec.retrieval.base import Query, ScoringRetriever, as_dataset

logger = logging.getLogger(__name__)

#: Gap buckets: 0 (the same day), then log2-spaced days (1, 2–3, 4–7, …), the last one open.
GAP_BUCKETS = 12


def gap_buckets(days: np.ndarray) -> np.ndarray:
    """int64: the bucket of each gap in days (0 for less than a day).

    >>> gap_buckets(np.array([0.0, 0.5, 1.0, 3.0, 4.0, 1e6])).tolist()
    [0, 0, 1, 2, 3, 11]
    """
    days = np.asarray(days, dtype=np.float64)
    out = np.where(days < 1, 0, 1 + np.floor(np.log2(np.maximum(days, 1.0))))
    return np.minimum(out, GAP_BUCKETS - 1).astype(np.int64)


def purchase_sequences(data: Dataset, max_len: int, until: pd.Timestamp | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each user's latest ``max_len`` purchases in time order, left-padded: int64 [n_users, max_len]
    items (-1: padding) and float64 [n_users, max_len] their calendar days since the epoch (NaN:
    padding); only purchases before ``until`` when given."""
    frame = data.interactions if until is None else data.interactions.loc[data.interactions["timestamp"] < until]
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    days = frame["timestamp"].to_numpy().astype("datetime64[D]").astype(np.float64)
    order = np.lexsort((items, days, users))
    users, items, days = users[order], items[order], days[order]
    seq = np.full((data.n_users, max_len), -1, dtype=np.int64)
    seq_days = np.full((data.n_users, max_len), np.nan)
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    for user in np.flatnonzero(np.diff(bounds)):
        lo, hi = max(bounds[user], bounds[user + 1] - max_len), bounds[user + 1]
        seq[user, lo - hi :], seq_days[user, lo - hi :] = items[lo:hi], days[lo:hi]
    return seq, seq_days


def gaps(days: np.ndarray) -> np.ndarray:
    """int64, the shape of ``days`` (rows of :func:`purchase_sequences`): the gap bucket of each
    purchase since the one before it (0 for the first and for padding)."""
    before = np.concatenate([days[:, :1], days[:, :-1]], axis=1)
    return np.where(np.isnan(before) | np.isnan(days), 0, gap_buckets(np.nan_to_num(days - before)))


def shuffled_baskets(seq: np.ndarray, days: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``seq`` and ``days`` with each same-day basket in a random order (a basket has none)."""
    order = np.lexsort((rng.random(seq.shape), np.nan_to_num(days, nan=-np.inf)), axis=1)
    return np.take_along_axis(seq, order, axis=1), np.take_along_axis(days, order, axis=1)


def future_targets(seq: np.ndarray, days: np.ndarray, horizon_days: float, rng: np.random.Generator) -> np.ndarray:
    """int64 like ``seq``: for each purchase, one item bought after it within ``horizon_days`` (drawn
    uniformly among them; -1 where there is none): what the state after it is trained to find."""
    n, length = seq.shape
    cols = np.arange(length)
    horizon = np.where(np.isnan(days), -np.inf, days + horizon_days)
    # end[r, t]: the first position after t beyond the horizon (days are non-decreasing along a row)
    end = np.stack([np.searchsorted(np.nan_to_num(days[r], nan=-np.inf), horizon[r], side="right") for r in range(n)])
    end = np.maximum(end, cols + 1)
    pick = cols + 1 + np.floor(rng.random((n, length)) * (end - cols - 1)).astype(np.int64)
    out = np.take_along_axis(seq, np.minimum(pick, length - 1), axis=1)
    return np.where((end > cols + 1) & (seq >= 0), out, -1)


def _network(n_items: int, title_dim: int, cfg: SequenceConfig) -> Any:
    import torch
    from torch import nn

    class SequenceNetwork(nn.Module):
        """Item embeddings (id where sold + projected title) and a causal transformer over purchases."""

        def __init__(self) -> None:
            super().__init__()
            self.item_id = nn.Embedding(n_items, cfg.dim)
            nn.init.normal_(self.item_id.weight, std=0.02)
            self.register_buffer("sold", torch.zeros(n_items, 1))  # 1 for items with a trained id vector
            self.title = nn.Linear(title_dim, cfg.dim, bias=False)
            self.position = nn.Embedding(cfg.max_len, cfg.dim)
            self.gap = nn.Embedding(GAP_BUCKETS, cfg.dim)
            for table in (self.position, self.gap):  # on the items' scale, so that they do not drown them
                nn.init.normal_(table.weight, std=0.02)
            layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, cfg.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)

        def items(self, titles: Any) -> Any:
            """float [n_items, dim]: every item's embedding (its title alone where it was never sold)."""
            return self.item_id.weight * self.sold + self.title(titles)

        def forward(self, seq: Any, gaps: Any, items: Any) -> Any:
            """float [batch, max_len, dim]: the state after each purchase (``seq``: -1 is padding)."""
            padding = seq < 0
            length = seq.shape[1]
            x = items[seq.clamp(min=0)] * (~padding).unsqueeze(-1)
            x = x + self.position(torch.arange(length, device=seq.device)) + self.gap(gaps)
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), diagonal=1)
            out = self.encoder(self.dropout(x), mask=causal, src_key_padding_mask=padding)
            return self.norm(torch.nan_to_num(out))  # a padded position attends to nothing: NaN, never read

    return SequenceNetwork()


class SequenceRetriever(ScoringRetriever):
    """Candidates from the order and timing of each customer's purchases (see the module docstring).

    ``fit(data, title_vectors=...)``: float [n_items, d] title vectors joined into the item inputs
    (the hybrid passes its bi-encoder's); without them the bundled MiniLM's first layer encodes the
    titles, zero-shot. A fresh history (``user_items=``: counts, no times) is read as its items by
    count, the most bought last, gaps unknown.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> model = SequenceRetriever(epochs=2, show_progress=False).fit(synthetic(seed=0))
    >>> model.candidates([0], k=5, exclude="seen").item_ids.shape
    (1, 5)
    """

    name = "sequence"
    config_class = SequenceConfig
    config: SequenceConfig

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None, *,
            title_vectors: np.ndarray | None = None) -> SequenceRetriever:
        import torch

        data = as_dataset(data, item_texts)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.device_ = resolve_device(cfg.device)
        titles = _title_vectors(data) if title_vectors is None else np.asarray(title_vectors, dtype=np.float32)
        if titles.ndim != 2 or titles.shape[0] != data.n_items:
            raise ValueError(f"title_vectors must be [{data.n_items}, d] (one row per item), got {titles.shape}")
        self.titles_ = np.array(titles, dtype=np.float32)  # a writable copy: torch reads it
        self.network_ = _network(data.n_items, titles.shape[1], cfg).to(self.device_)
        sold = np.asarray(data.user_items("binary").getnnz(axis=0) > 0)
        self.network_.sold.copy_(torch.as_tensor(sold, dtype=torch.float32).unsqueeze(1))
        self.training_log_ = self._train(data, np.flatnonzero(sold))
        self._remember(data, data.user_items("counts"))
        self._set_vectors(*purchase_sequences(data, cfg.max_len))
        return self

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "index": self.index_.kind_, "device": self.device_}
        if self.training_log_:  # not kept by save
            best = max(self.training_log_, key=lambda r: r["valid_ndcg@50"])
            out["training"] = {"epochs": self.training_log_[-1]["epoch"], "best_epoch": best["epoch"],
                               "best_valid_ndcg@50": best["valid_ndcg@50"]}
        return out

    # ------------------------------------------------------------------ training
    def _train(self, data: Dataset, sold: np.ndarray) -> list[dict[str, float]]:
        """Each purchase's state trained to find an item bought in the ``horizon_days`` after it
        (softmax over the sold items; same-day baskets reshuffled each epoch); the weights of the epoch with
        the best held-out ndcg@50 are kept."""
        import torch

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        start = data.end - pd.Timedelta(days=cfg.valid_days)
        before, before_days = purchase_sequences(data, cfg.max_len, until=start)
        window = data.between(start, None).user_items("binary")
        eligible = np.flatnonzero((window.getnnz(axis=1) > 0) & (before >= 0).any(axis=1))
        valid = np.sort(rng.choice(eligible, size=min(cfg.valid_users, len(eligible)), replace=False))
        seq, days = purchase_sequences(data, cfg.max_len)
        seq[valid], days[valid] = before[valid], before_days[valid]  # their window purchases are held out
        rows = np.flatnonzero((seq >= 0).sum(axis=1) > 1)
        titles = torch.as_tensor(self.titles_, device=self.device_)
        optimizer = torch.optim.AdamW(self.network_.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        targets = window[valid]

        def validate() -> float:
            if not len(valid):
                return 0.0
            users, items = self._vectors(before[valid], gaps(before_days[valid]), titles)
            top = top_k(users @ items.T, 50).item_ids
            return float(ndcg(hits(top, targets), targets.getnnz(axis=1), 50).mean())

        log = [{"epoch": 0, "loss": float("nan"), "valid_ndcg@50": validate()}]
        best, best_state, stale = log[0]["valid_ndcg@50"], copy.deepcopy(self.network_.state_dict()), 0
        for epoch in range(1, cfg.epochs + 1):
            self.network_.train()
            losses = []
            for batch in np.array_split(rng.permutation(rows), max(1, len(rows) // cfg.batch_size)):
                batch_seq, batch_days = shuffled_baskets(seq[batch], days[batch], rng)
                later = future_targets(batch_seq, batch_days, cfg.horizon_days, rng)
                negatives = sold if len(sold) <= cfg.negatives else rng.choice(sold, cfg.negatives, replace=False)
                losses.append(self._step(optimizer, batch_seq, gaps(batch_days), later, titles, negatives))
            score = validate()
            log.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_ndcg@50": score})
            logger.info("sequence model epoch %d: loss %.4f, validation ndcg@50 %.4f", epoch, log[-1]["loss"], score)
            if score > best or not len(valid):  # no one to validate on: the last epoch is kept
                best, best_state, stale = score, copy.deepcopy(self.network_.state_dict()), 0
            elif (stale := stale + 1) >= cfg.patience:
                break
        self.network_.load_state_dict(best_state)
        self.network_.eval()
        return log

    def _step(self, optimizer: Any, seq: np.ndarray, gap: np.ndarray, later: np.ndarray, titles: Any, negatives: np.ndarray) -> float:
        """One optimiser step on a batch of sequences (``later``: each purchase's target, -1: none;
        ``negatives``: the items it competes with, all sold items when they are few enough)."""
        import torch

        device = self.device_
        x, y = torch.as_tensor(seq, device=device), torch.as_tensor(later, device=device)
        items = self.network_.items(titles)
        predicted = y >= 0
        states = self.network_(x, torch.as_tensor(gap, device=device), items)[predicted]
        targets, negatives = y[predicted], torch.as_tensor(negatives, device=device)
        sampled = (states @ items[negatives].T).masked_fill(targets[:, None] == negatives[None, :], float("-inf"))
        logits = torch.cat([(states * items[targets]).sum(-1, keepdim=True), sampled], dim=1)  # accidental hits removed
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=device))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network_.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach())

    def _vectors(self, seq: np.ndarray, gap: np.ndarray, titles: Any) -> tuple[np.ndarray, np.ndarray]:
        """float32 [n, dim] the state after each sequence's last purchase (zeros for an empty
        sequence: no preference) and float32 [n_items, dim] the item embeddings, in inference mode."""
        import torch

        self.network_.eval()
        out = []
        with torch.inference_mode():
            items = self.network_.items(torch.as_tensor(titles, device=self.device_))
            for lo in range(0, len(seq), 1024):
                states = self.network_(torch.as_tensor(seq[lo : lo + 1024], device=self.device_),
                                       torch.as_tensor(gap[lo : lo + 1024], device=self.device_), items)
                out.append(states[:, -1].float().cpu().numpy())
        users = np.concatenate(out) if out else np.zeros((0, items.shape[1]), np.float32)
        users[(seq < 0).all(axis=1)] = 0.0
        return users, items.float().cpu().numpy()

    def _set_vectors(self, seq: np.ndarray, days: np.ndarray) -> None:
        """Every fitted customer's vector, the item embeddings and their index (built here, so
        reads only look them up)."""
        self.user_vectors_, self.item_vectors_ = self._vectors(seq, gaps(days), self.titles_)
        self.index_ = self._build_index(np.arange(len(self.item_vectors_)))

    def _build_index(self, listed: np.ndarray, config: IndexConfig | None = None) -> VectorIndex | ShardedIndex:
        """A validated index over the ``listed`` items' embeddings (a sharded one keeps what it can
        of the one in service)."""
        rng = np.random.default_rng(self.config.seed)
        sample = self.user_vectors_[rng.choice(len(self.user_vectors_), size=min(200, len(self.user_vectors_)), replace=False)]
        return build_checked(config or self.config.index, self.item_vectors_[listed], listed.astype(np.int64), sample,
                             previous=self.__dict__.get("index_"))

    # ------------------------------------------------------------------ retrieval
    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        """float32 [n, dim]: fitted customers' vectors, or a fresh history's run through the transformer."""
        if not fresh:
            return self.user_vectors_[users]
        history = sp.csr_matrix(history)
        seq = np.full((history.shape[0], self.config.max_len), -1, dtype=np.int64)
        for row in range(history.shape[0]):
            lo, hi = history.indptr[row], history.indptr[row + 1]
            items = history.indices[lo:hi][np.argsort(history.data[lo:hi], kind="stable")][-self.config.max_len :]
            if len(items):
                seq[row, -len(items) :] = items
        return self._vectors(seq, np.zeros_like(seq), self.titles_)[0]

    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        index = self.index_  # one reference per call: a concurrent rebuild never mixes into it
        parts = []
        for start in range(0, max(len(query.users), 1), batch_size):
            rows = slice(start, start + batch_size)
            exclude = query.exclude[rows] if sp.issparse(query.exclude) else query.exclude
            vectors = self.user_vectors(query.users[rows], query.history[rows], query.fresh)
            parts.append(index.search(vectors, query.k, exclude=exclude, allow=query.allow))
        return Candidates.concat(parts)

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        scores = self.user_vectors(users, history, fresh).astype(np.float64) @ self.item_vectors_.T.astype(np.float64)
        unlisted = np.ones(scores.shape[1], dtype=bool)
        unlisted[self.index_.item_ids] = False
        scores[:, unlisted] = -np.inf
        return scores

    # ------------------------------------------------------------------ changes
    def with_catalog(self, catalog: Catalog, *, shards: int | None = None, items: IdMap | None = None,
                     title_vectors: np.ndarray | None = None) -> SequenceRetriever:
        """A copy whose index holds ``catalog``'s listed items. With ``items`` (an item map extending
        the fitted one) and ``title_vectors`` (one row per item of it: the hybrid passes its
        bi-encoder's), new items join with their projected titles and changed titles are re-read;
        without them, only known items are listed, under the titles they were fitted with."""
        self._check_fitted()
        assert self.items_ is not None
        config = self.config if shards is None else self.config.replace(index=self.config.index.replace(shards=shards))
        out = self.replaced(config=config)
        if items is not None and title_vectors is not None:
            if len(title_vectors) != len(items) or not np.array_equal(items.ids[: len(self.items_)], self.items_.ids):
                raise ValueError("items must extend the fitted item map and title_vectors hold one row per item of it")
            out = out._with_titles(items, np.asarray(title_vectors, dtype=np.float32))
        known = out.items_.positions(catalog.item_ids)
        listed = np.unique(known[known >= 0])
        if not len(listed):
            raise ValueError("no listed item is known to the sequence model: nothing to index")
        out.index_ = out._build_index(listed, config.index)
        out.catalog_change_ = {"items": int(len(listed)), "reused_shards": reused_shards(out.index_)}
        return out

    def _with_titles(self, items: IdMap, titles: np.ndarray) -> SequenceRetriever:
        """A copy over ``items`` whose item embeddings read ``titles`` (new items: title only)."""
        import torch

        network = copy.deepcopy(self.network_)
        grown = len(items) - len(self.items_)
        if grown:
            with torch.no_grad():
                weight = torch.cat([network.item_id.weight, torch.zeros(grown, network.item_id.weight.shape[1], device=self.device_)])
                network.item_id = torch.nn.Embedding.from_pretrained(weight, freeze=True)
                network.sold = torch.cat([network.sold, torch.zeros(grown, 1, device=self.device_)])
        user_items = sp.csr_matrix((self.user_items_.data, self.user_items_.indices, self.user_items_.indptr),
                                   shape=(self.user_items_.shape[0], len(items)))
        out = self.replaced(network_=network, titles_=np.ascontiguousarray(titles), items_=items, user_items_=user_items)
        out.item_vectors_ = out._vectors(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64), titles)[1]
        return out

    def with_interactions(self, data: Dataset) -> SequenceRetriever:
        """A copy whose customers' vectors read their sequences as of ``data`` (new customers
        included; the network is not trained). Purchases of items it was not fitted on are left
        out of the sequences until the next fit."""
        self._check_extends(data)
        seq, days = purchase_sequences(data, self.config.max_len)
        unknown = seq >= len(self.item_vectors_)
        seq[unknown], days[unknown] = -1, np.nan
        user_vectors = self._vectors(seq, gaps(days), self.titles_)[0]
        user_items = sp.csr_matrix(data.user_items("counts")[:, : len(self.item_vectors_)], dtype=np.float32)
        return self.replaced(user_vectors_=user_vectors, user_items_=user_items, users_=data.users, catalog_change_={})

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        return {"user_vectors": self.user_vectors_, "item_vectors": self.item_vectors_, "titles": self.titles_}

    def _write(self, folder: Path, arrays: dict[str, np.ndarray]) -> None:
        from safetensors.torch import save_file

        super()._write(folder, arrays)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}, str(folder / "network.safetensors"))
        self.index_.save(folder / "index", items=self.items_)

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        from safetensors.torch import load_file

        self.device_ = resolve_device(self.config.device)
        self.user_vectors_, self.item_vectors_, self.titles_ = arrays["user_vectors"], arrays["item_vectors"], arrays["titles"]
        self.network_ = _network(len(self.titles_), self.titles_.shape[1], self.config).to(self.device_)
        try:
            self.network_.load_state_dict(load_file(str(folder / "network.safetensors"), device=self.device_))
        except (OSError, RuntimeError) as exc:
            raise ArtifactError(f"{folder}: the sequence network cannot be read: {exc}") from exc
        self.network_.eval()
        self.training_log_ = []
        self.index_ = load_index(folder / "index", expect={"dim": self.item_vectors_.shape[1]})


def _title_vectors(data: Dataset) -> np.ndarray:
    """float32 [n_items, 384]: the titles encoded by the bundled MiniLM's first layer (zero-shot)."""
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    return BiEncoderRetriever(fine_tune=False, layers=1, show_progress=False).fit(data).index_vectors_().copy()
