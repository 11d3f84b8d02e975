"""A BERT cross-encoder whose lower layers read the user and the item apart, joined at the top.

As in PreTTR (MacAvaney et al. 2020), the lower layers run on the user context once per request
and on each item once per catalog (cached: item tokens sit at fixed positions after a fixed user
budget, so their states do not depend on the user), and only the top layer joins them: the item's
tokens attend to the user's tokens and their own. ``joined_layers`` > 1 moves the join down;
``joined_layers == layers`` is a plain full-attention cross-encoder over the same tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ecomrec.encoders import resolve_model_path


@dataclass
class Segments:
    """Lower-layer states of a batch of token segments."""

    hidden: torch.Tensor  # float [n, length, hidden]
    mask: torch.Tensor  # bool [n, length], True = real token


class LateJoinCrossEncoder(nn.Module):
    """P(purchase | user text, item text) logits from a BERT-family ``base_model`` (path or hub name;
    the bundled MiniLM by default) cut to ``layers``, the top ``joined_layers`` of which read user and
    item together (1: the late join; ``layers``: full attention). ``user_tokens``, ``item_tokens``:
    token budgets (user context incl. [CLS]/[SEP]; title incl. its [SEP]). ``pretrained``: load the
    base model's weights, or only its architecture (False: the weights are loaded next).
    """

    def __init__(self, base_model: str | None, layers: int, user_tokens: int, item_tokens: int, *, joined_layers: int = 1,
                 pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve_model_path(base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # A fast tokenizer's call stores its truncation and padding: users and items each get their own.
        self.item_tokenizer = copy.deepcopy(self.tokenizer)
        if pretrained:
            bert = AutoModel.from_pretrained(path, add_pooling_layer=False)
        else:
            bert = AutoModel.from_config(AutoConfig.from_pretrained(path), add_pooling_layer=False)
        stack = list(bert.encoder.layer)
        if not 2 <= layers <= len(stack):
            raise ValueError(f"layers must be in 2..{len(stack)} (at least one apart and one joined), got {layers}")
        if not 1 <= joined_layers <= layers:
            raise ValueError(f"joined_layers must be in 1..{layers}, got {joined_layers}")
        if user_tokens + item_tokens > bert.config.max_position_embeddings:
            raise ValueError("user_tokens + item_tokens exceeds the model's positions")
        apart = layers - joined_layers
        self.top = stack[layers - 1]
        self.middle = nn.ModuleList(stack[apart : layers - 1])  # joined layers below the top (full attention)
        bert.encoder.layer = nn.ModuleList(stack[:apart])
        bert.config.num_hidden_layers = apart
        self.lower = bert
        self.user_tokens, self.item_tokens = user_tokens, item_tokens
        self.heads = bert.config.num_attention_heads
        self.head = nn.Sequential(nn.Linear(bert.config.hidden_size, 64), nn.GELU(), nn.Linear(64, 1))

    def save_architecture(self, folder: str | Path) -> None:
        """Write what rebuilding this model needs besides its weights (the BERT config with every
        kept layer, the tokenizer files), so a saved model never needs its base model."""
        config = copy.deepcopy(self.lower.config)
        config.num_hidden_layers = len(self.lower.encoder.layer) + len(self.middle) + 1  # the joined layers too
        config.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def tokenize_users(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.user_tokens, return_tensors="pt")

    def tokenize_items(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.item_tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.item_tokens - 1)
        sep = self.item_tokenizer.sep_token_id
        rows = [ids + [sep] for ids in encoded["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode_users(self, tokens: dict[str, torch.Tensor]) -> Segments:
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return self._lower(ids, mask, positions, token_type=0)

    def encode_items(self, tokens: dict[str, torch.Tensor]) -> Segments:
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        positions = self.user_tokens + torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return self._lower(ids, mask, positions, token_type=1)

    def _lower(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, token_type: int) -> Segments:
        types = torch.full_like(ids, token_type)
        out = self.lower(input_ids=ids, attention_mask=mask, token_type_ids=types, position_ids=positions)
        return Segments(out.last_hidden_state, mask.bool())

    def forward(self, users: Segments, items: Segments, user_index: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        """Logits [pairs] for pairs (``users[user_index[p]]``, ``items[item_index[p]]``)."""
        attention, layer = self.top.attention, self.top
        item_h = items.hidden[item_index]  # [P, Li, H]
        mask = torch.cat([users.mask[user_index], items.mask[item_index]], dim=1)  # [P, Lu + Li]
        if len(self.middle):
            user_h, item_h = self._read_together(users.hidden[user_index], item_h, mask)
            keys = torch.cat([attention.self.key(user_h), attention.self.key(item_h)], dim=1)
            values = torch.cat([attention.self.value(user_h), attention.self.value(item_h)], dim=1)
        else:  # the late join: user keys and values once per user, not per pair
            keys = torch.cat([attention.self.key(users.hidden)[user_index], attention.self.key(item_h)], dim=1)
            values = torch.cat([attention.self.value(users.hidden)[user_index], attention.self.value(item_h)], dim=1)
        query = attention.self.query(item_h)
        context = self._attend(query, keys, values, mask)
        joined = attention.output.LayerNorm(attention.output.dropout(attention.output.dense(context)) + item_h)
        out = layer.output.LayerNorm(layer.output.dropout(layer.output.dense(layer.intermediate(joined))) + joined)
        item_mask = items.mask[item_index].unsqueeze(-1).to(out.dtype)
        pooled = (out * item_mask).sum(dim=1) / item_mask.sum(dim=1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)

    def _read_together(self, user_h: torch.Tensor, item_h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The joined layers below the top over each pair's user and item tokens together."""
        hidden = torch.cat([user_h, item_h], dim=1)
        bias = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(~mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for joined in self.middle:
            out = joined(hidden, attention_mask=bias)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden[:, : user_h.shape[1]], hidden[:, user_h.shape[1] :]

    def _attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of the item tokens' queries over the pair's keys and values
        (``mask``: bool [pairs, keys], True = a real token), through torch's fused kernel."""
        pairs, q_len, hidden = query.shape
        head_dim = hidden // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(pairs, x.shape[1], self.heads, head_dim).transpose(1, 2)

        dropout = self.top.attention.self.dropout.p if self.training else 0.0
        context = nn.functional.scaled_dot_product_attention(split(query), split(keys), split(values),
                                                             attn_mask=mask[:, None, None, :], dropout_p=dropout)
        return context.transpose(1, 2).reshape(pairs, q_len, hidden)
