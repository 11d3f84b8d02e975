"""Pieces shared by the fine-tuning loops (bi-encoder, cross-encoder)."""

from __future__ import annotations

from typing import Any


def warmup_then_decay(optimizer: Any, steps: int, warmup_ratio: float) -> Any:
    """Linear warm-up over ``warmup_ratio`` of ``steps``, then linear decay to 0
    (``transformers.get_linear_schedule_with_warmup``)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, max(1, int(warmup_ratio * steps)), max(steps, 1))


def step(loss: Any, parameters: Any, optimizer: Any, schedule: Any, max_norm: float = 1.0) -> float:
    """Backpropagate, clip gradients, update, advance the schedule; returns the loss value."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())
