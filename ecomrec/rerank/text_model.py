"""Training and serving the cross-encoder's text score for (user history text, candidate title)."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

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


class TextScorer:
    """A :class:`LateJoinCrossEncoder` fitted on labelled candidates; scores pairs fast.

    Item lower-layer states are computed once per catalog and reused for every request; a
    request's user context runs through the lower layers once. The training loop is its own (the
    late-join model is no sentence-transformers ``CrossEncoder``): per-user batches whose user
    context is encoded once, early stopping on ndcg@10 over those lists.
    """

    def __init__(self, config: CrossEncoderConfig, item_texts: list[str], *, show_progress: bool = False) -> None:
        self.config, self.item_texts, self.show_progress = config, list(item_texts), show_progress
        self.log: list[dict[str, float]] = []
        self._items = None

    def _model(self, saved: Path | None = None):  # type: ignore[no-untyped-def]
        """A fresh model from the configured base model, or the architecture saved in ``saved``."""
        from ecomrec.rerank.late_join import LateJoinCrossEncoder

        cfg = self.config
        base = cfg.base_model if saved is None else str(saved)
        return LateJoinCrossEncoder(base, cfg.layers, cfg.user_tokens, cfg.item_tokens, joined_layers=cfg.joined_layers,
                                    pretrained=saved is None)

    def fit(self, train: Examples, valid: Examples) -> TextScorer:
        """Train on ``train``'s labelled candidates (pointwise, binary cross-entropy),
        early-stopping on ``valid``'s ndcg@10."""
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(None if cfg.device == "auto" else cfg.device)
        self.model = self._model().to(self.device)
        groups = self._training_groups(train)
        steps = _batches(groups, cfg.users_per_batch, cfg.epochs, cfg.seed)
        body = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        optimizer = torch.optim.AdamW([{"params": body, "lr": cfg.learning_rate},
                                       {"params": self.model.head.parameters(), "lr": cfg.head_learning_rate}],
                                      weight_decay=cfg.weight_decay)
        schedule = warmup_then_decay(optimizer, len(steps), cfg.warmup_ratio)
        valid = valid.rows(np.random.default_rng(cfg.seed).permutation(len(valid))[:150])
        best = self._valid_ndcg(valid)
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
            logits = self.model(users, item_states, torch.as_tensor(user_index, device=self.device),
                                torch.as_tensor(item_index, device=self.device))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            losses.append(step_once(loss, self.model.parameters(), optimizer, schedule))
            if step % cfg.eval_every == 0 or step == len(steps):
                ndcg = self._valid_ndcg(valid)
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
        return self.prepare()

    def with_items(self, item_texts: list[str]) -> TextScorer:
        """A copy of this fitted scorer over another catalog's titles (their item states computed)."""
        out = copy.copy(self)
        out.item_texts = list(item_texts)
        return out.prepare()

    def prepare(self) -> TextScorer:
        """Fix the model for serving: the catalog's item states computed here and the user
        tokenizer's settings fixed, so scoring later writes nothing."""
        self.model.eval()
        self._items = None
        self.item_states()
        self.model.tokenize_users(["a history"])
        return self

    def _training_groups(self, train: Examples) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per user: candidate columns of its positives and ``negatives_per_positive`` sampled
        negatives each, with their labels, in groups of ``pairs_per_user``, until ``max_pairs``."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        groups, total = [], 0
        for row in rng.permutation(len(train)):
            ids, labels = train.candidates.item_ids[row], train.labels[row]
            valid = ids >= 0
            positives = np.flatnonzero(valid & labels)
            if not len(positives):
                continue
            candidates = np.flatnonzero(valid & ~labels)
            negatives = rng.choice(candidates, size=min(len(candidates), cfg.negatives_per_positive * len(positives)), replace=False)
            columns = np.concatenate([positives, negatives])
            y = np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]
            order = rng.permutation(len(columns))
            size = cfg.pairs_per_user
            groups += [(int(row), columns[order[c : c + size]], y[order[c : c + size]]) for c in range(0, len(columns), size)]
            total += len(columns)
            if total >= cfg.max_pairs:
                break
        return groups

    def _valid_ndcg(self, valid: Examples) -> float:
        self.model.eval()
        self._items = None
        scores = self.score(valid.texts, valid.candidates.item_ids)
        self._items = None
        return ndcg_from_labels(scores, valid.labels, valid.candidates.item_ids >= 0)

    def item_states(self):  # type: ignore[no-untyped-def]
        """Lower-layer states of every catalog item (padded to ``item_tokens``), computed once per weights."""
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

    def score(self, texts: list[str], item_ids: np.ndarray) -> np.ndarray:
        """float32 [n, k] logits of each query's candidates (-inf for padding)."""
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
                logits = self.model(users, items, torch.as_tensor(user_index, device=self.device),
                                    torch.as_tensor(ids[valid], device=self.device))
                out[rows][valid] = logits.float().cpu().numpy()  # out[rows] is a view
        return out

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "cross_encoder.safetensors"))
        self.model.save_architecture(folder / ARCHITECTURE)

    @classmethod
    def load(cls, folder: Path, config: CrossEncoderConfig, item_texts: list[str]) -> TextScorer:
        """Read what :meth:`save` wrote; needs nothing outside ``folder`` (not the base model)."""
        from safetensors.torch import load_file

        from ecomrec.exceptions import ArtifactError

        scorer = cls(config, item_texts)
        scorer.device = resolve_device(None if config.device == "auto" else config.device)
        if not (folder / ARCHITECTURE / "config.json").is_file():
            raise ArtifactError(f"{folder}: the cross-encoder's architecture ({ARCHITECTURE}/) is missing; refit and save")
        scorer.model = scorer._model(folder / ARCHITECTURE).to(scorer.device)
        scorer.model.load_state_dict(load_file(str(folder / "cross_encoder.safetensors"), device=scorer.device))
        return scorer.prepare()


def _to(tokens: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in tokens.items()}


def _batches(groups: list, users_per_batch: int, epochs: int, seed: int) -> list[list]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(groups))
        out += [[groups[i] for i in order[s : s + users_per_batch]] for s in range(0, len(order), users_per_batch)]
    return out
