"""AdamW with linear warmup and cosine decay to a floor, and global-norm gradient clipping."""

from __future__ import annotations

import optax


def warmup_cosine(lr: float, total_steps: int, warmup_ratio: float, min_lr_ratio: float) -> optax.Schedule:
    warmup = int(round(warmup_ratio * total_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=max(warmup, 1) if warmup_ratio > 0 else 0,
        decay_steps=max(total_steps, 1),
        end_value=lr * min_lr_ratio,
    )


def adamw(section, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`section`: an OptimSection (lr, warmup_ratio, min_lr_ratio, b1, b2, eps, weight_decay, grad_clip)."""
    schedule = warmup_cosine(section.lr, total_steps, section.warmup_ratio, section.min_lr_ratio)
    parts = [optax.clip_by_global_norm(section.grad_clip)] if section.grad_clip else []
    parts.append(
        optax.adamw(schedule, b1=section.b1, b2=section.b2, eps=section.eps, weight_decay=section.weight_decay)
    )
    return optax.chain(*parts), schedule
