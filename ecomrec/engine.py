"""One entry point: fit the whole pipeline, ask it for candidates, recommendations and search.

External ids (customer ids, SKUs) become dense indices here and back. A read takes one immutable
:class:`Snapshot` once, with no lock; ``fit``, ``rebuild_index`` and ``load`` build a new one aside
(sharing unchanged parts), check it (:meth:`Snapshot.verify`) and publish it with one reference
assignment. Writers run one at a time, in call order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.artifacts import KEEP_VERSIONS, manifest_config, open_artifact, write_artifact
from ecomrec.config import EngineConfig
from ecomrec.candidates import Candidates
from ecomrec.data.changes import append_purchases, forget_customers
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.index import shard_builds
from ecomrec.refit import WarmStart
from ecomrec.rerank import PurchaseReranker, RerankedRetriever, training_examples
from ecomrec.rerank.reranker import example_bi_encoder
from ecomrec.results import Results
from ecomrec.retrieval.base import Retriever
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
from ecomrec.retrieval.fusion import HybridRetriever
from ecomrec.retrieval.search import TextSearch
from ecomrec.scale import BACKENDS, encode_on_ray, ray_session, ray_shard_builder
from ecomrec.timing import timed

logger = logging.getLogger(__name__)


class Engine:
    """Candidates → purchase-probability reranking → recommendations, and text search.

    ``config``: :class:`~ecomrec.config.EngineConfig` (defaults: the tuned Online Retail settings);
    ``show_progress``: progress bars for long work (``None``: on when logging is at INFO).

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> from ecomrec.config import ALSConfig, FusionConfig, HybridConfig
    >>> data = synthetic(n_users=60, n_items=40, n_clusters=2, seed=3)
    >>> hybrid = HybridConfig(als=ALSConfig(factors=4, iterations=3),
    ...                       fusion=FusionConfig(quotas={"own": 20, "als": 20}, tune=False))
    >>> engine = Engine(EngineConfig(hybrid=hybrid, use_reranker=False), show_progress=False).fit(data)
    >>> recs = engine.recommend(["u00000"], k=3)
    >>> len(recs.to_records())
    3
    """

    def __init__(self, config: EngineConfig | None = None, *, show_progress: bool | None = None) -> None:
        self.config = config or EngineConfig()
        self.show_progress = show_progress
        self._snapshot: Snapshot | None = None
        self._write_lock = threading.Lock()  # writers (fit, update, forget, rebuild_index) one at a time; reads take none
        self._forgot_since_save = False  # the next save prunes older versions

    # ------------------------------------------------------------------ fit
    def fit(self, data: Dataset, *, sources: dict[str, Retriever] | None = None, warm_start: Engine | None = None) -> Engine:
        """Fit candidate generation (ALS, item-kNN, bi-encoder, fusion), the reranker and search on
        ``data``, whose catalog is served from then on; reads use the old models until the new ones
        are complete and checked.

        ``sources``: retrievers already fitted on ``data`` to use as they are (keys ``als``,
        ``itemknn``, ``bi_encoder``, ``repurchase``, ``popularity``). With ``config.fine_tune_once``
        the served bi-encoder continues training from the one behind the reranker's examples.

        ``warm_start``: a fitted engine (the one in service, ``self`` included, updated since or
        not) to continue from instead of starting anew (:mod:`ecomrec.refit`): ``data`` must reach
        at least as far as its log. ``fit_report_["warm_start"]`` says, per part, what was
        continued, kept or trained anew and why.
        """
        if not isinstance(data, Dataset):
            raise TypeError(f"fit takes a Dataset (see ecomrec.datasets), got {type(data).__name__}")
        if warm_start is not None and not isinstance(warm_start, Engine):
            raise TypeError(f"warm_start takes a fitted Engine, got {type(warm_start).__name__}")
        with self._write_lock:
            warm = None if warm_start is None else WarmStart(warm_start.snapshot, self.config, data, show_progress=self.show_progress)
            return self._fit(data, sources, warm)

    def _fit(self, data: Dataset, sources: dict[str, Retriever] | None, warm: WarmStart | None) -> Engine:
        start = time.perf_counter()
        cfg, given, stages = self.config, dict(sources or {}), {}
        early = None
        if warm is not None:
            early = warm.example_bi_encoder(data, stages) if cfg.use_reranker and cfg.hybrid.fusion.uses_text else None
            given = {**warm.sources(data, stages), **given}
        if (early is None and cfg.fine_tune_once and cfg.use_reranker and cfg.hybrid.fusion.uses_text and "bi_encoder" not in given
                and cfg.hybrid.bi_encoder.fine_tune):
            with timed(stages, "bi_encoder_examples"):
                early = example_bi_encoder(data, cfg.hybrid.bi_encoder, cfg.rerank, show_progress=self.show_progress)
            served = cfg.hybrid.bi_encoder  # max_pairs in all: the examples' fine-tune's pairs, then the rest
            served = served.replace(max_pairs=max(served.max_pairs - early.config.max_pairs, served.batch_size))
            with timed(stages, "bi_encoder"):
                given["bi_encoder"] = BiEncoderRetriever(served, show_progress=self.show_progress).fit(data, start_from=early)
        fusion_from = None if warm is None else warm.fusion_from
        hybrid = HybridRetriever(cfg.hybrid, retrievers=given, fusion_from=fusion_from, show_progress=self.show_progress).fit(data)
        model: HybridRetriever | RerankedRetriever = hybrid
        if cfg.use_reranker:
            with timed(stages, "rerank_examples"):
                examples = training_examples(data, hybrid, cfg.rerank, bi=early, show_progress=self.show_progress)
            served = None if warm is None else warm.reranker
            reranker = PurchaseReranker(cfg.rerank, show_progress=self.show_progress, warm_start=served)
            model = RerankedRetriever(hybrid, reranker, examples=examples).fit(data)
            if served is not None:
                warm.report["purchase_model"] = reranker.training_["warm_start"]
        search = None
        if cfg.search.enabled:
            with timed(stages, "search"):
                search = TextSearch(cfg.search, show_progress=self.show_progress).fit(data, start_from=None if warm is None else warm.search())
        self._publish(Snapshot.of(model, data.listed_mask(), [str(t) for t in data.item_texts], search, data,
                                  example_bi=None if early is None else early.weights_only()))
        self.fit_seconds_ = time.perf_counter() - start
        self.fit_stages_ = {**model.fit_stages(), **stages}
        self.fit_report_ = {"seconds": self.fit_seconds_, "stages": self.fit_stages_,
                            "warm_start": None if warm is None else warm.report}
        logger.info("engine fitted on %d interactions in %.1f s (%s)", len(data), self.fit_seconds_,
                    ", ".join(f"{k} {v:.0f} s" for k, v in self.fit_stages_.items()))
        return self

    def _publish(self, snapshot: Snapshot, changed: set[str] | frozenset[str] = frozenset()) -> dict[str, float]:
        """Check ``snapshot`` (:meth:`Snapshot.verify`; ``changed``: external ids whose title the change
        set), then make it the one every later read uses; returns what the check covered and took."""
        checked = snapshot.verify(changed, previous=self._snapshot, seed=self.config.hybrid.bi_encoder.seed)
        self._snapshot = snapshot
        return checked

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot reads use now (raises NotFittedError before ``fit`` or ``load``)."""
        snapshot = self._snapshot
        if snapshot is None:
            raise NotFittedError("Engine")
        return snapshot

    # Views of the current snapshot, for inspection; a read pins one snapshot instead.
    model_ = property(lambda self: None if self._snapshot is None else self._snapshot.model)
    hybrid_ = property(lambda self: self.snapshot.hybrid)
    users_ = property(lambda self: self.snapshot.users)
    items_ = property(lambda self: self.snapshot.items)
    listed_ = property(lambda self: self.snapshot.listed)
    item_texts_ = property(lambda self: list(self.snapshot.item_texts))

    # ------------------------------------------------------------------ reads
    def candidates(self, user_ids: Sequence[object] | None = None, k: int = 200, *,
                   histories: Sequence[Sequence[object]] | None = None, exclude: str | Sequence[object] | None = None,
                   allow: Sequence[object] | None = None, on_unknown: str | None = None) -> Results:
        """The fused candidates (no reranking) for known users or for purchase histories.

        Parameters
        ----------
        user_ids
            External ids of users seen in training (mutually exclusive with ``histories``).
        k
            Items per user.
        histories
            For unseen users: each a list of external item ids they bought (repeats count).
        exclude
            ``"seen"`` (the user's own purchases) or external item ids never to return.
        allow
            External item ids; when given, only these can be returned.
        on_unknown
            ``raise`` | ``warn`` | ``drop`` for unknown user or item ids (default: the config's):
            ``warn`` keeps an unknown user's row, served from popularity; ``drop`` removes it.

        A query without any known purchase (an unknown user kept by ``warn``, an empty history,
        a history of unknown items only) gets the popularity ranking, with ``exclude`` and
        ``allow`` applied; its ``found_by`` says ``popularity``.
        """
        return self._read(user_ids, k, histories, exclude, allow, on_unknown, explain=False)

    def recommend(self, user_ids: Sequence[object] | None = None, k: int = 10, *,
                  histories: Sequence[Sequence[object]] | None = None, exclude: str | Sequence[object] | None = None,
                  allow: Sequence[object] | None = None, on_unknown: str | None = None) -> Results:
        """Top ``k`` by purchase probability, with why (arguments as for :meth:`candidates`).

        ``scores`` are calibrated P(purchase in the next 30 days); :meth:`Results.found_by` and
        :meth:`Results.reasons` say which sources found each item and which signals raised its
        probability. Without a reranker this equals :meth:`candidates`. Queries without any known
        purchase get the popularity ranking (scores: recent buyers per item; no probability).
        """
        return self._read(user_ids, k, histories, exclude, allow, on_unknown, explain=self.config.use_reranker)

    def search(self, query: str | Sequence[str], *, user_id: object | None = None, k: int = 10,
               allow: Sequence[object] | None = None, category: str | Sequence[str] | None = None,
               on_unknown: str | None = None) -> Results:
        """Items matching free text (one query or a batch): BM25 and the base model's dense retrieval
        fused (:meth:`TextSearch.search`), optionally personalised by a known user. ``allow``: external
        item ids the results must come from; ``category``: one or several category names
        (case-insensitive). Only listed items are returned. ``scores`` are fusion scores (comparable
        within one query); ``sources`` hold each list's rank and score."""
        snap = self.snapshot  # the one snapshot this read uses, whatever is published meanwhile
        if snap.search is None:
            raise ValueError("this engine has no search index (fitted with search.enabled = false): fit it again to search")
        texts = [query] if isinstance(query, str) else list(query)
        policy = on_unknown or self.config.on_unknown
        users = None if user_id is None else snap.users.index([user_id] * len(texts), on_unknown=policy)
        if users is not None:  # the dense retriever numbers users as the fitted data did; dropped: no personalisation
            users = np.asarray(users, dtype=np.int64) if len(users) else None
        allowed = None
        if allow is not None:
            found = snap.search.items_.index(_as_list(allow, "allow"), on_unknown=policy)
            allowed = found[found >= 0]
        hits = snap.search.search(texts, k, user_ids=users, allow=allowed, category=category)
        return Results.of(texts, hits, snap.search.items_.ids, snap.search.item_texts_)

    def _read(self, user_ids: Sequence[object] | None, k: int, histories: Sequence[Sequence[object]] | None,
              exclude: str | Sequence[object] | None, allow: Sequence[object] | None, on_unknown: str | None, *,
              explain: bool) -> Results:
        snap = self.snapshot  # the one snapshot this read uses, whatever is published meanwhile
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if (user_ids is None) == (histories is None):
            raise ValueError("give exactly one of user_ids (known users) and histories (unseen users)")
        policy = on_unknown or self.config.on_unknown
        if histories is not None:
            queries = [f"history #{i}" for i in range(len(_as_list(histories, "histories")))]
            users = np.full(len(queries), -1, dtype=np.int64)
            fresh = snap.history_matrix(histories, policy)
            empty = fresh.getnnz(axis=1) == 0
        else:
            labels = [str(u) for u in _as_list(user_ids, "user_ids")]
            users = snap.users.index(labels, on_unknown=policy).astype(np.int64)
            queries = labels if policy != "drop" else [u for u in labels if u in snap.users]
            fresh, empty = None, users < 0  # an unknown user kept by "warn" has no history
        excluded = snap.exclusions(exclude, policy)
        allowed = snap.allowed(allow, policy)
        if not len(users):
            found = Candidates.empty(0, k)
        else:  # users with a history as usual, those without from popularity; rows keep their order
            with_history = snap.answer(users[~empty], k, None if fresh is None else fresh[~empty], excluded, allowed, explain)
            parts = [with_history, snap.popular(int(empty.sum()), k, excluded, allowed)]
            order = np.argsort(np.r_[np.flatnonzero(~empty), np.flatnonzero(empty)], kind="stable")
            found = Candidates.concat(parts)[order]
        return Results.of(queries, found, snap.items.ids, snap.item_texts)

    # ------------------------------------------------------------------ catalog changes
    def rebuild_index(self, catalog: pd.DataFrame | None = None, *, backend: str = "local", workers: int = 2,
                      address: str | None = None, shards: int | None = None) -> dict[str, Any]:
        """Serve ``catalog`` (a DataFrame with ``item_id``, ``text`` and optionally ``category``;
        None: re-index the current one) from a new snapshot, built and checked while reads go on.

        Only new or changed titles are encoded; unlisted items are no longer returned; new items are
        searchable at once and join recommendations at the next :meth:`fit`. ``shards`` splits every
        index over that many FAISS shards from now on (unchanged shards are kept). ``backend="ray"``
        (the ``scale`` extra) encodes titles on ``workers`` Ray actors (``address``: a running cluster,
        ``"auto"`` to find it; none: a local Ray for the call) and builds changed shards in Ray tasks.
        A rebuild that fails raises and changes nothing.

        Returns a report: ``sources`` and ``search`` (each part's change: new, changed and encoded
        titles, ``reused_shards``, seconds), ``listed`` (the catalog's items), ``recommendable``
        (those the recommenders know), ``verified`` (the check), ``seconds``.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if shards is not None and (not isinstance(shards, (int, np.integer)) or shards < 1):
            raise ValueError(f"shards must be a positive integer, got {shards!r}")
        if backend == "ray":
            with ray_session(address, workers) as ray, shard_builds(ray_shard_builder(ray)):
                return self._rebuild(catalog, backend, workers, address, shards)
        return self._rebuild(catalog, backend, workers, address, shards)

    def _rebuild(self, frame: pd.DataFrame | None, backend: str, workers: int, address: str | None,
                 shards: int | None) -> dict[str, Any]:
        with self._write_lock:
            snap = self.snapshot
            start = time.perf_counter()
            catalog = snap.catalog() if frame is None else Catalog.from_frame(frame)
            report: dict[str, Any] = {"backend": backend}
            if backend == "ray":
                catalog, report["ray"] = _encode_on_ray(snap, catalog, workers, address)
            changed = snap.with_catalog(catalog, shards=shards)
            report.update(changed.catalog_change())
            report["verified"] = self._publish(changed, snap.changed_titles(catalog))
        report.update({"listed": len(catalog), "recommendable": int(changed.listed.sum()), "seconds": time.perf_counter() - start})
        return report

    # ------------------------------------------------------------------ update
    def update(self, interactions: Dataset | pd.DataFrame, catalog: pd.DataFrame | None = None) -> dict[str, Any]:
        """Serve new purchases at once, training nothing, from one new checked snapshot.

        ``interactions``: the new purchases, a :class:`Dataset` (from any loader: its catalog titles
        new items) or a DataFrame with ``user_id``, ``item_id``, ``timestamp`` and optionally
        ``quantity``. ``catalog``: optionally the catalog now (as :meth:`rebuild_index` takes it),
        applied in the same snapshot. The rules (:mod:`ecomrec.data.changes`): rows the engine has
        already are skipped (an update is idempotent), rows repeated inside the update count once,
        rows dated before the engine's last purchase that it does not hold are an error (late
        purchases need a refit), new customers are added, unknown items need a title.

        What changes: every customer's history (exclude-seen, repurchase, the text and sequence
        sources' reading of it), popularity and new-arrival windows, the reranker's item and user
        statistics; ALS factors of the customers with new purchases, solved from their whole
        history, then of the items with new purchases (implicit's ``recalculate_user`` /
        ``recalculate_item``). Fusion weights and every network stay as fitted.

        Returns a report: ``rows``, ``repeated_in_update``, ``already_applied``, ``applied``,
        ``new_users``, ``new_items``, ``touched_users``, ``log_end_before`` / ``log_end_after``,
        ``snapshot`` (``updated`` or ``unchanged``), ``verified`` (the swap check), ``seconds``.
        """
        with self._write_lock:
            snap = self.snapshot
            if snap.log is None:
                raise ArtifactError("this engine holds no purchase log (saved before engines kept it): refit it to update it")
            start = time.perf_counter()
            listing = None if catalog is None else Catalog.from_frame(catalog)
            appended = append_purchases(snap.log, interactions, items=snap.items, item_texts=snap.item_texts, catalog=listing)
            report: dict[str, Any] = {**appended.report, "snapshot": "unchanged"}
            if appended.report["applied"] or listing is not None:
                data = appended.data
                search = None if snap.search is None else snap.search.with_interactions(data)
                listed = np.concatenate([snap.listed, np.ones(len(appended.new_items), dtype=bool)])
                updated = Snapshot.of(snap.model.with_interactions(data), listed, [str(t) for t in data.item_texts], search, data,
                                      example_bi=snap.example_bi)
                changed = set() if listing is None else updated.changed_titles(listing)
                if listing is not None:
                    updated = updated.with_catalog(listing)
                report.update(snapshot="updated", verified=self._publish(updated, changed))
        report["seconds"] = time.perf_counter() - start
        logger.info("update: %d purchases applied (%d already applied), %d new customers, %d new items in %.1f s",
                    report["applied"], report["already_applied"], report["new_users"], report["new_items"], report["seconds"])
        return report

    # ------------------------------------------------------------------ monitor
    def monitor(self, interactions: Dataset | pd.DataFrame, *, k: int = 10, plot: str | Path | None = None) -> dict[str, Any]:
        """Judge the served engine on a window of realised purchases it has not seen (after its
        last purchase; as :meth:`update` takes them, ideally as long as ``rerank.window_days``, the
        horizon its probabilities are for): ndcg@10 and recall@``k`` of what it recommends to each
        customer who bought, ECE and Brier score of its top-``k`` probabilities, catalog coverage,
        the share of purchases by customers and of items it does not know, the drift of item
        purchase shares (PSI), its own validation figures beside them, and a verdict (``ok`` or
        ``refit advised``, with ``reasons``) by the thresholds in :mod:`ecomrec.monitor`.
        ``plot``: also write a PNG (reliability diagram, items that drifted most)."""
        from ecomrec.monitor import monitor

        return monitor(self, interactions, k=k, plot=plot)

    # ------------------------------------------------------------------ forget
    def forget(self, user_ids: Sequence[object]) -> dict[str, Any]:
        """Forget customers: their purchases leave the log, their ids the id maps (each becomes an
        unreachable placeholder, so other customers keep their indices), and every per-customer
        state is rebuilt without them (histories and history texts, ALS factors, sequence
        vectors, repurchase counts), in one new snapshot; they are served as unknown customers
        from then on. The next :meth:`save` keeps no older version (an older one may hold them,
        unless a reader still holds it open). Networks trained on their purchases keep an
        aggregate influence until the next :meth:`fit`; the saved manifest records how many
        customers were forgotten since it (``facts.forgotten_since_fit``).

        Returns ``requested``, ``forgotten``, ``rows_removed``, ``not_found`` (up to 20 ids the
        engine does not know: nothing to do for them), ``forgotten_since_fit``, ``seconds``.
        """
        ids = _as_list(user_ids, "user_ids")
        with self._write_lock:
            snap = self.snapshot
            if snap.log is None:
                raise ArtifactError("this engine holds no purchase log (saved before engines kept it): refit it to forget customers")
            start = time.perf_counter()
            data, report = forget_customers(snap.log, ids)
            if report["forgotten"]:
                search = None if snap.search is None else snap.search.with_interactions(data)
                self._publish(Snapshot.of(snap.model.with_interactions(data), snap.listed, snap.item_texts, search, data,
                                          example_bi=snap.example_bi))
                self._forgot_since_save = True
        report.update(forgotten_since_fit=len(self.snapshot.log.users.forgotten()), seconds=time.perf_counter() - start)
        logger.info("forget: %d of %d customers forgotten, %d purchases removed", report["forgotten"], report["requested"],
                    report["rows_removed"])
        return report

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted engine, every weight it needs included, to the folder ``path`` (atomically).
        After :meth:`forget` the save keeps no older version at ``path``.

        ``path`` must be new, an empty folder, or an engine saved before: anything else is an
        :class:`ArtifactError` and stays untouched.
        """
        snap = self.snapshot
        forgotten = 0 if snap.log is None else len(snap.log.users.forgotten())
        facts = {"model": type(snap.model).__name__, "users": len(snap.users), "items": len(snap.items),
                 "forgotten_since_fit": forgotten}

        def write(folder: Path) -> None:
            snap.model.save(folder / "model")
            np.save(folder / "listed.npy", np.asarray(snap.listed), allow_pickle=False)
            (folder / "item_texts.json").write_text(json.dumps(list(snap.item_texts)), encoding="utf-8")
            if snap.search is not None:
                snap.search.save(folder / "search")
            if snap.log is not None:
                snap.log.save(folder / "log")
            if snap.example_bi is not None:
                snap.example_bi.save_weights(folder / "example_bi_encoder")

        # after forget, older versions (which may hold the forgotten customers) go
        target = write_artifact(path, "Engine", self.config.to_dict(), facts, write, keep=1 if self._forgot_since_save else KEEP_VERSIONS)
        self._forgot_since_save = False
        return target

    @classmethod
    def load(cls, path: str | Path) -> Engine:
        """Read an engine written by :meth:`save` (no training data nor base model needed).

        Raises ArtifactError if any file is missing, corrupt, written for another config or in
        another artifact format; warns (ArtifactVersionWarning) when the libraries' major.minor
        versions differ from those it was written with.
        """
        with open_artifact(path, "Engine") as (folder, manifest):
            engine = cls(manifest_config(manifest, EngineConfig, folder))
            kind = manifest["facts"].get("model")
            loader = {"RerankedRetriever": RerankedRetriever, "HybridRetriever": HybridRetriever}.get(kind)
            if loader is None:
                raise ArtifactError(f"{folder}: unknown model kind {kind!r}")
            model = loader.load(folder / "model")
            expected = engine.config.rerank if kind == "RerankedRetriever" else engine.config.hybrid
            if model.config.to_dict() != expected.to_dict():
                raise ArtifactError(f"{folder}: the saved model was fitted with another config than the engine's manifest")
            try:
                listed = np.load(folder / "listed.npy", allow_pickle=False)
                item_texts = json.loads((folder / "item_texts.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{folder}: cannot read the catalog state: {exc}") from exc
            search = None
            if (folder / "search").is_dir():
                search = TextSearch.load(folder / "search", engine.config.search)
            log = Dataset.load(folder / "log") if (folder / "log").is_dir() else None
            early = None
            if (folder / "example_bi_encoder").is_dir():
                early = BiEncoderRetriever.load_weights(folder / "example_bi_encoder", engine.config.hybrid.bi_encoder)
        try:
            engine._publish(Snapshot.of(model, listed, item_texts, search, log, example_bi=early))
        except ArtifactError as error:
            raise ArtifactError(f"{path}: {error}") from None
        return engine


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one read uses, published together and never changed afterwards."""

    model: HybridRetriever | RerankedRetriever  # what ``recommend`` calls: the hybrid, or the hybrid with its reranker
    hybrid: HybridRetriever  # the fused candidate generator (its sources, their indexes and id maps)
    listed: np.ndarray  # bool [n_items], read-only: items the shop lists now
    item_texts: tuple[str, ...]  # title per dense item index
    search: TextSearch | None = None  # the catalog search, None if not built
    log: Dataset | None = None  # the purchases the models know (what ``update`` appends to); None: saved without it
    example_bi: BiEncoderRetriever | None = None  # the reranker's examples' bi-encoder (its weights are what is saved)

    @classmethod
    def of(cls, model: HybridRetriever | RerankedRetriever, listed: np.ndarray, item_texts: Sequence[str],
           search: TextSearch | None = None, log: Dataset | None = None, *, example_bi: BiEncoderRetriever | None = None) -> Snapshot:
        listed = np.array(listed, dtype=bool)
        listed.setflags(write=False)
        hybrid = model.hybrid if isinstance(model, RerankedRetriever) else model
        return cls(model, hybrid, listed, tuple(item_texts), search, log, example_bi)

    def catalog(self) -> Catalog:
        """What this snapshot lists now: search's items when it has a search (it holds the items
        catalog changes added since fit), else the recommenders' listed items."""
        if self.search is not None:
            listed = np.flatnonzero(self.search.listed_)
            return Catalog.of(self.search.items_.ids[listed], [self.search.item_texts_[i] for i in listed],
                              [self.search.categories_[i] for i in listed])
        listed = np.flatnonzero(self.listed)
        return Catalog.of(self.items.ids[listed], [self.item_texts[i] for i in listed])

    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> Snapshot:
        """A new snapshot serving ``catalog``: every part's own catalog change (this one is left
        as it was); ``shards`` splits every index over that many FAISS shards from now on."""
        model = self.model.with_catalog(catalog, shards=shards)
        search = None if self.search is None else self.search.with_catalog(catalog, shards=shards)
        known = self.items.positions(catalog.item_ids)
        listed = np.zeros(len(self.items), dtype=bool)
        listed[known[known >= 0]] = True
        item_texts = list(self.item_texts)
        for position, text in zip(known, catalog.texts):
            if position >= 0:
                item_texts[position] = text
        return Snapshot.of(model, listed, item_texts, search, self.log, example_bi=self.example_bi)

    def catalog_change(self) -> dict[str, Any]:
        """What the catalog change that made this snapshot did: per source, and in search."""
        return {"sources": dict(self.hybrid.catalog_change_), "search": {} if self.search is None else dict(self.search.catalog_change_)}

    def text_retrievers(self) -> dict[str, BiEncoderRetriever]:
        """The retrievers holding title vectors: the bi-encoder source, search's dense side."""
        out = {}
        bi = self.hybrid.models_.get("bi_encoder")
        if isinstance(bi, BiEncoderRetriever):
            out["bi_encoder"] = bi
        if self.search is not None:
            out["search"] = self.search._check_fitted()
        return out

    @property
    def users(self) -> IdMap:
        return self.hybrid.users_

    @property
    def items(self) -> IdMap:
        return self.hybrid.items_

    def verify(self, changed: set[str] | frozenset[str] = frozenset(), *, previous: Snapshot | None = None,
               seed: int = 0) -> dict[str, float]:
        """Check what this snapshot serves before it is published; raise :class:`ArtifactError`
        naming the first item served wrong. Returns how many items were checked and the seconds.

        Per part, for a sample of listed items (of ``changed``, external ids whose title a catalog
        change set, 1 % within :data:`VERIFY_CHANGED_MIN` .. :data:`VERIFY_CHANGED`; and
        :data:`VERIFY_UNCHANGED` others): the ALS index holds the item's factors; the bi-encoder's
        and search's dense index hold its current title's vector (for an unchanged title the one
        ``previous``, the snapshot in service, served; else a fresh encoding); search's lexical side
        finds it by its exact title."""
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        size = min(VERIFY_CHANGED, max(VERIFY_CHANGED_MIN, int(np.ceil(0.01 * len(changed)))))
        before = {} if previous is None else previous.text_retrievers()
        parts: list[tuple[str, Any, np.ndarray]] = []
        if (als := self.hybrid.models_.get("als")) is not None:
            parts.append(("als", als, np.intersect1d(np.flatnonzero(self.listed), als.index_.item_ids)))
        for name, retriever in self.text_retrievers().items():
            holder = self.search if name == "search" else retriever
            parts.append((name, holder, retriever.index_.item_ids))
        checked = 0
        for name, part, listed in parts:
            new, kept = _verification_sample(part.items_.ids, listed, changed, size, rng)
            served = np.zeros(len(kept), bool)
            try:
                if name in before:  # unchanged titles: the vectors the snapshot in service served for them
                    expected, served = before[name].served_vectors(part.items_.ids[kept], [part.item_texts_[i] for i in kept])
                    part.verify_items(kept[served], expected[served])
                part.verify_items(np.r_[new, kept[~served]])  # the others: fresh encodings
            except ArtifactError as error:
                raise ArtifactError(f"nothing published: {error}") from None
            checked += len(new) + len(kept)
        return {"items": checked, "seconds": time.perf_counter() - start}

    def changed_titles(self, catalog: Catalog) -> set[str]:
        """External ids of ``catalog`` whose title is not what this snapshot serves (new items included)."""
        served = self.catalog()
        titles = dict(zip(served.item_ids, served.texts))
        return {i for i, t in zip(catalog.item_ids, catalog.texts) if titles.get(i) != t}

    def answer(self, users: np.ndarray, k: int, fresh: Any, exclude: Any, allow: Any, explain: bool) -> Candidates:
        """Candidates (or reranked recommendations, with ``explain``) for users with a history."""
        if not len(users):
            return Candidates.empty(0, k)
        if explain and isinstance(self.model, RerankedRetriever):
            return self.model.recommend(users, k, user_items=fresh, exclude=exclude, allow=allow)
        return self.hybrid.candidates(users, k, user_items=fresh, exclude=exclude, allow=allow)

    def popular(self, n: int, k: int, exclude: Any, allow: Any) -> Candidates:
        """The popularity ranking for ``n`` queries without history (``exclude`` / ``allow`` applied)."""
        if not n:
            return Candidates.empty(0, k)
        empty = sp.csr_matrix((n, len(self.items)), dtype=np.float32)
        found = self.hybrid.popularity_source().candidates(np.full(n, -1), k, user_items=empty, exclude=exclude, allow=allow)
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.float32), found.item_ids.shape)
        found.sources["popularity_rank"] = np.where(found.item_ids >= 0, ranks, np.nan).astype(np.float32)
        found.sources["popularity_score"] = np.where(found.item_ids >= 0, found.scores, np.nan).astype(np.float32)
        return found

    def item_indices(self, ids: Sequence[object], policy: str) -> np.ndarray:
        found = self.items.index(_as_list(ids, "item ids"), on_unknown="drop" if policy == "drop" else policy)
        return found[found >= 0].astype(np.int64)

    def history_matrix(self, histories: Sequence[Sequence[object]], policy: str) -> sp.csr_matrix:
        """CSR [len(histories), n_items] purchase counts of external-id histories."""
        rows, cols = [], []
        for row, items in enumerate(_as_list(histories, "histories")):
            dense = self.item_indices(items, policy)
            rows += [row] * len(dense)
            cols += dense.tolist()
        return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), len(self.items)))

    def exclusions(self, exclude: str | Sequence[object] | None, policy: str) -> Any:
        if exclude is None or (isinstance(exclude, str) and exclude == "seen"):
            return exclude
        if isinstance(exclude, str):
            raise ValueError(f"exclude must be 'seen' or a list of item ids, got {exclude!r}")
        return self.item_indices(exclude, policy)

    def allowed(self, allow: Sequence[object] | None, policy: str) -> np.ndarray | None:
        """Allowed dense items: ``allow`` ∩ the listed catalog (None when both are everything)."""
        listed = self.listed
        bi = self.hybrid.models_.get("bi_encoder")
        grown = bi is not None and bi.n_items > len(listed)  # items added since fit: searchable only
        if allow is None:
            return None if listed.all() and not grown else np.flatnonzero(listed)
        wanted = self.item_indices(allow, policy)
        return wanted[listed[wanted]]


#: Items per part a swap check covers: of those whose title the change set (1 % of them, within
#: these bounds), and of the others.
VERIFY_CHANGED_MIN = 1
VERIFY_CHANGED = 16
VERIFY_UNCHANGED = 8


def _verification_sample(ids: Sequence[object], listed: np.ndarray, changed: set[str] | frozenset[str], size: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(up to ``size`` listed items whose external id is in ``changed``, up to
    :data:`VERIFY_UNCHANGED` other listed items), dense indices, sorted."""
    is_changed = np.fromiter((str(ids[i]) in changed for i in listed), dtype=bool, count=len(listed)) if changed else np.zeros(len(listed), bool)
    return tuple(np.sort(rng.choice(group, size=min(k, len(group)), replace=False))  # type: ignore[return-value]
                 for group, k in ((listed[is_changed], size), (listed[~is_changed], VERIFY_UNCHANGED)))


def _encode_on_ray(snap: Snapshot, catalog: Catalog, workers: int, address: str | None) -> tuple[Catalog, dict[str, Any]]:
    """``catalog`` carrying, for each text retriever, the vectors of the titles it holds none
    for, encoded on Ray; and a report per retriever."""
    report = {}
    for name, retriever in snap.text_retrievers().items():
        encoded, report[name] = encode_on_ray(retriever, catalog.texts, workers=workers, address=address)
        catalog = catalog.with_encoded(retriever.model_hash_, {**catalog.encoded.get(retriever.model_hash_, {}), **encoded})
    return catalog, report


def _as_list(values: object, what: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of ids, got {type(values).__name__}")
    return list(values)  # type: ignore[call-overload]


def describe(results: Results) -> str:
    """A short text table of ``results`` (for the CLI and the demo)."""
    frame = results.to_frame()
    if frame.empty:
        return "(no results)"
    columns = [c for c in ("query", "rank", "item_id", "title", "p_purchase", "score", "found_by", "why") if c in frame]
    if "p_purchase" in frame:
        columns.remove("score")
    return frame[columns].to_string(index=False, max_colwidth=48)


__all__ = ["Engine", "EngineConfig", "Results", "describe"]
