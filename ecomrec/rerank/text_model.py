"""Training and serving the cross-encoder's text score for (user history text, candidate title)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ecomrec.config import CrossEncoderConfig
from ecomrec.device import resolve_device
from ecomrec.metrics import ndcg_from_labels
from ecomrec.rerank.examples import Examples
from ecomrec.training import step as step_once
from ecomrec.training import warmup_then_decay

logger = logging.getLogger(__name__)

#: Subfolder of a saved reranker with the cross-encoder's BERT config and tokenizer files.
ARCHITECTURE = "cross_encoder"
#: File of a saved joint model with its feature statistics.
BEHAVIOUR = "behaviour.npz"


class TextScorer:
    """A :class:`LateJoinCrossEncoder` fitted on labelled candidates; scores pairs fast.

    Item lower-layer states are computed once per catalog (after training) and reused for
    every request; a request's user context runs through the lower layers once.

    Why a custom training loop here, where the bi-encoder uses sentence-transformers' trainer:
    the late-join model is no ``CrossEncoder`` (its forward takes pre-encoded user and item
    segments and joins them in its top layer), and its batches are per-user candidate lists
    whose user context is encoded once and shared by all of that user's pairs, with the
    early-stopping metric being ndcg@10 over those lists. The pieces that are generic come from
    libraries: AdamW from torch, the schedule from transformers, the metric from ecomrec.metrics.
    """

    def __init__(
        self, config: CrossEncoderConfig, item_texts: list[str], *, behaviour: BehaviourInput | None = None,
        listwise: bool = False, show_progress: bool = False,
    ) -> None:
        self.config = config
        self.item_texts = list(item_texts)
        self.behaviour = behaviour
        self.listwise = listwise
        self.show_progress = show_progress
        self.log: list[dict[str, float]] = []
        self._items = None
        self._prior: np.ndarray | None = None  # float32 [items] logit of each title for an empty history (NaN: not yet)

    def _model(self, saved: Path | None = None):  # type: ignore[no-untyped-def]
        """A fresh model from the configured base model, or the architecture saved in ``saved``."""
        from ecomrec.rerank.late_join import LateJoinCrossEncoder

        cfg = self.config
        base = cfg.base_model if saved is None else str(saved)
        width = self.behaviour.width if self.behaviour is not None else 0
        return LateJoinCrossEncoder(base, cfg.layers, cfg.user_tokens, cfg.item_tokens, width, joined_layers=cfg.joined_layers,
                                    pretrained=saved is None)

    # ------------------------------------------------------------------ training
    def fit(self, train: Examples, valid: Examples, base: Callable[[Examples], np.ndarray] | None = None) -> TextScorer:
        """Train on ``train``'s labelled candidates, early-stopping on ``valid``'s ndcg@10.

        ``base``: the margin [n, k] another model gives each candidate of some examples; the
        network then learns what it leaves (its output is added to it, in training and
        validation; :meth:`score` returns the network's part alone). Its output layer starts at
        zero, so before training — and after it, when validation never improves — the sum is
        the base model's margin exactly.
        """
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.device = resolve_device(None if cfg.device == "auto" else cfg.device)
        self.model = self._model().to(self.device)
        if base is not None:  # start at the base model exactly: a path that learns nothing leaves it unchanged
            torch.nn.init.zeros_(self.model.head[-1].weight)
            torch.nn.init.zeros_(self.model.head[-1].bias)
        groups = self._training_groups(train)
        steps = _batches(groups, cfg.users_per_batch, cfg.epochs, cfg.seed)
        train_base = base(train) if base is not None else None
        body = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": cfg.learning_rate}, {"params": self.model.head.parameters(), "lr": cfg.head_learning_rate}],
            weight_decay=cfg.weight_decay,
        )
        schedule = warmup_then_decay(optimizer, len(steps), cfg.warmup_ratio)
        loss_fn = _listwise_loss if self.listwise else _pointwise_loss
        valid = valid.rows(np.random.default_rng(cfg.seed).permutation(len(valid))[:150])
        valid_base = base(valid) if base is not None else None
        best = self._valid_ndcg(valid, valid_base)
        best_state, stale, losses = copy.deepcopy(self.model.state_dict()), 0, []
        self.log = [{"step": 0, "loss": float("nan"), "valid_ndcg@10": best}]
        logger.info("cross-encoder: %d training pairs, %d steps; untrained validation ndcg@10 %.4f",
                    sum(len(g[1]) for g in groups), len(steps), best)
        start = time.perf_counter()
        for step, batch in enumerate(tqdm(steps, desc="fine-tune cross-encoder", disable=not self.show_progress), 1):
            self.model.train()
            texts = [train.texts[row] for row, _, _ in batch]
            rows = np.concatenate([np.full(len(columns), row) for row, columns, _ in batch])
            columns = np.concatenate([columns for _, columns, _ in batch])
            labels = torch.as_tensor(np.concatenate([y for _, _, y in batch]).astype(np.float32), device=self.device)
            user_index = np.repeat(np.arange(len(batch)), [len(c) for _, c, _ in batch])
            unique_items, item_index = np.unique(train.candidates.item_ids[rows, columns], return_inverse=True)
            users = self.model.encode_users(_to(self.model.tokenize_users(texts), self.device))
            item_states = self.model.encode_items(_to(self.model.tokenize_items([self.item_texts[i] for i in unique_items]), self.device))
            features = None
            if self.behaviour is not None:
                hide = rng.random(len(rows)) < cfg.behaviour_dropout
                features = torch.as_tensor(self.behaviour(train.features[rows, columns], hide), device=self.device)
            logits = self.model(users, item_states, torch.as_tensor(user_index, device=self.device),
                                torch.as_tensor(item_index, device=self.device), features)
            if train_base is not None:
                logits = logits + torch.as_tensor(train_base[rows, columns], dtype=logits.dtype, device=self.device)
            loss = loss_fn(logits, labels, torch.as_tensor(user_index, device=self.device))
            losses.append(step_once(loss, self.model.parameters(), optimizer, schedule))
            if step % cfg.eval_every == 0 or step == len(steps):
                ndcg = self._valid_ndcg(valid, valid_base)
                self.log.append({"step": step, "loss": float(np.mean(losses[-cfg.eval_every:])), "valid_ndcg@10": ndcg})
                logger.info("cross-encoder step %d: loss %.4f, validation ndcg@10 %.4f", step, self.log[-1]["loss"], ndcg)
                if ndcg > best:
                    best, best_state, stale = ndcg, copy.deepcopy(self.model.state_dict()), 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
        self.model.load_state_dict(best_state)
        self.train_seconds = time.perf_counter() - start
        self.prepare()
        return self

    def prepare(self) -> TextScorer:
        """Fix the model for serving: the catalog's item states (and item priors, where
        configured) computed here, and the user tokenizer's settings fixed, so scoring later
        writes nothing."""
        self.model.eval()
        self._items = self._prior = None
        self.item_states()
        if self.config.subtract_item_prior:
            self.item_prior(np.arange(len(self.item_texts)))
        self.model.tokenize_users(["a history"])
        return self

    def _training_groups(self, train: Examples) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per user: candidate columns of its positives and ``negatives_per_positive`` sampled
        negatives each, with their labels. Pointwise: a few pairs per group
        (``pairs_per_user``); listwise: one list per user of at most ``list_size``, or with
        ``list_size`` 0 the user's whole list (every candidate, as the trees read it)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        groups, total = [], 0
        most_positives = max(1, cfg.list_size // (1 + cfg.negatives_per_positive))
        for row in rng.permutation(len(train)):
            ids, labels = train.candidates.item_ids[row], train.labels[row]
            valid = ids >= 0
            positives = np.flatnonzero(valid & labels)
            if not len(positives):
                continue
            if self.listwise and cfg.list_size == 0:
                columns = rng.permutation(np.flatnonzero(valid))
                added = [(int(row), columns, labels[columns].astype(bool))]
            else:
                added = self._sampled_groups(int(row), positives, np.flatnonzero(valid & ~labels), most_positives, rng)
            groups += added
            total += sum(len(columns) for _, columns, _ in added)
            if total >= cfg.max_pairs:
                break
        return groups

    def _sampled_groups(self, row: int, positives: np.ndarray, negatives: np.ndarray, most_positives: int,
                        rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """One user's positives with ``negatives_per_positive`` sampled negatives each: one list
        (listwise, at most ``list_size``) or groups of ``pairs_per_user`` (pointwise)."""
        cfg = self.config
        if self.listwise:
            positives = rng.permutation(positives)[:most_positives]
        wanted = cfg.negatives_per_positive * len(positives)
        if self.listwise:
            wanted = min(wanted, cfg.list_size - len(positives))
        negatives = rng.choice(negatives, size=min(len(negatives), wanted), replace=False)
        columns = np.concatenate([positives, negatives])
        y = np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]
        order = rng.permutation(len(columns))
        size = len(columns) if self.listwise else cfg.pairs_per_user  # pointwise: a few per step
        return [(row, columns[order[chunk : chunk + size]], y[order[chunk : chunk + size]]) for chunk in range(0, len(columns), size)]

    def _valid_ndcg(self, valid: Examples, base: np.ndarray | None = None) -> float:
        self.model.eval()
        self._items = None
        scores = self._logits(valid.texts, valid.candidates.item_ids, valid.features)  # early stopping reads the plain logits
        self._items = None
        return ndcg_from_labels(scores if base is None else scores + base, valid.labels, valid.candidates.item_ids >= 0)

    # ------------------------------------------------------------------ scoring
    def item_states(self):  # type: ignore[no-untyped-def]
        """Lower-layer states of every catalog item (padded to ``item_tokens``): computed by
        :meth:`prepare` (while training, whenever the weights changed)."""
        import torch

        if self._items is None:
            from ecomrec.rerank.late_join import Segments

            hidden, masks = [], []
            with torch.inference_mode():
                for start in range(0, len(self.item_texts), 512):
                    tokens = self.model.tokenize_items(self.item_texts[start : start + 512])
                    seg = self.model.encode_items(_to(tokens, self.device))
                    pad = self.config.item_tokens - seg.hidden.shape[1]
                    hidden.append(torch.nn.functional.pad(seg.hidden, (0, 0, 0, pad)))
                    masks.append(torch.nn.functional.pad(seg.mask, (0, pad)))
            self._items = Segments(torch.cat(hidden), torch.cat(masks))
        return self._items

    def score(self, texts: list[str], item_ids: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, k] logits of each query's candidates (-inf for padding); ``features``
        (float [n, k, f], the collaborative features) are read by a joint model only. With
        ``config.subtract_item_prior``, each logit less its title's :meth:`item_prior`."""
        out = self._logits(texts, item_ids, features)
        if self.config.subtract_item_prior:
            valid = item_ids >= 0
            out[valid] -= self.item_prior(item_ids[valid])
        return out

    def item_prior(self, item_ids: np.ndarray) -> np.ndarray:
        """float32 [n]: each item's logit for an empty history (what the model gives the title
        whoever reads it); computed once per item and cached until the weights change."""
        if self._prior is None:
            self._prior = np.full(len(self.item_texts), np.nan, dtype=np.float32)
        ids = np.asarray(item_ids, dtype=np.int64)
        todo = np.unique(ids[np.isnan(self._prior[ids])])
        if len(todo):
            width = self.config.score_batch
            rows = -(-len(todo) // width)
            grid = np.full(rows * width, -1, dtype=np.int64)
            grid[: len(todo)] = todo
            logits = self._logits([""] * rows, grid.reshape(rows, width))
            self._prior[todo] = logits.reshape(-1)[: len(todo)]
        return self._prior[ids]

    def _logits(self, texts: list[str], item_ids: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, k] the model's logits (-inf for padding)."""
        import torch

        items = self.item_states()
        out = np.full(item_ids.shape, -np.inf, dtype=np.float32)
        per_batch = max(1, self.config.score_batch // max(item_ids.shape[1], 1))
        with torch.inference_mode():
            for start in range(0, len(texts), per_batch):
                rows = slice(start, start + per_batch)
                ids = item_ids[rows]
                valid = ids >= 0
                if not valid.any():
                    continue
                users = self.model.encode_users(_to(self.model.tokenize_users(list(texts[rows])), self.device))
                user_index = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)[valid]
                joined = None
                if self.behaviour is not None:
                    if features is None:
                        raise ValueError("this text model reads the collaborative features; none were given")
                    joined = torch.as_tensor(self.behaviour(features[rows][valid]), device=self.device)
                logits = self.model(users, items, torch.as_tensor(user_index, device=self.device),
                                    torch.as_tensor(ids[valid], device=self.device), joined)
                block = out[rows]
                block[valid] = logits.float().cpu().numpy()
                out[rows] = block
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "cross_encoder.safetensors"))
        self.model.save_architecture(folder / ARCHITECTURE)
        if self.behaviour is not None:
            np.savez(folder / BEHAVIOUR, **dataclasses.asdict(self.behaviour))

    @classmethod
    def load(cls, folder: Path, config: CrossEncoderConfig, item_texts: list[str]) -> TextScorer:
        """Read what :meth:`save` wrote; needs nothing outside ``folder`` (not the base model)."""
        from safetensors.torch import load_file

        from ecomrec.artifacts import load_npz
        from ecomrec.exceptions import ArtifactError

        behaviour = None
        if (folder / BEHAVIOUR).is_file():
            arrays = load_npz(folder / BEHAVIOUR)
            behaviour = BehaviourInput(arrays["mean"], arrays["scale"], int(arrays["cold_column"]))
        scorer = cls(config, item_texts, behaviour=behaviour)
        scorer.device = resolve_device(None if config.device == "auto" else config.device)
        if not (folder / ARCHITECTURE / "config.json").is_file():
            raise ArtifactError(f"{folder}: the cross-encoder's architecture ({ARCHITECTURE}/) is missing; refit and save")
        scorer.model = scorer._model(folder / ARCHITECTURE).to(scorer.device)
        scorer.model.load_state_dict(load_file(str(folder / "cross_encoder.safetensors"), device=scorer.device))
        return scorer.prepare()


@dataclasses.dataclass
class BehaviourInput:
    """The collaborative features as the joint network reads them: standardised, with a last
    column flagging "no behaviour" — set where the item was never bought before the cutoff
    (``cold_column`` is its buyer count) or where training hides the features (behaviour
    dropout); flagged rows carry zeros, so the text decides there."""

    mean: np.ndarray  # float32 [f]
    scale: np.ndarray  # float32 [f]
    cold_column: int

    @classmethod
    def fit(cls, features: np.ndarray, cold_column: int) -> BehaviourInput:
        """Statistics of ``features`` (float [rows, f], real candidates only)."""
        scale = features.std(axis=0)
        return cls(features.mean(axis=0).astype(np.float32), np.where(scale > 0, scale, 1.0).astype(np.float32), cold_column)

    @property
    def width(self) -> int:
        return len(self.mean) + 1

    def __call__(self, features: np.ndarray, hide: np.ndarray | None = None) -> np.ndarray:
        """float32 [rows, f + 1] network input of ``features`` (float [rows, f])."""
        flag = features[:, self.cold_column] <= 0
        if hide is not None:
            flag = flag | hide
        x = (features - self.mean) / self.scale
        x[flag] = 0.0
        return np.concatenate([x, flag[:, None]], axis=1).astype(np.float32)


def _pointwise_loss(logits: Any, labels: Any, groups: Any) -> Any:
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def _listwise_loss(logits: Any, labels: Any, groups: Any) -> Any:
    """Softmax cross-entropy of each list (``groups``: list of each pair) against its labels
    spread evenly over its positives, averaged over lists with a positive (ListNet's top-one form)."""
    import torch

    losses = []
    for g in torch.unique(groups):
        rows = groups == g
        y = labels[rows]
        if y.sum() > 0:
            losses.append(-(y / y.sum() * torch.log_softmax(logits[rows], dim=0)).sum())
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def _to(tokens: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in tokens.items()}


def _batches(groups: list, users_per_batch: int, epochs: int, seed: int) -> list[list]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(groups))
        out += [[groups[i] for i in order[s : s + users_per_batch]] for s in range(0, len(order), users_per_batch)]
    return out
