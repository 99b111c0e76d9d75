"""Learning-rate schedule: a pure function of the optimizer step.

The loss-to-loss recipe (Brandfonbrener et al. 2024, Table 8) warms up linearly over the first 20%
of the steps and then decays with a cosine to 0.1 x the peak, OLMo's ``CosWithWarmup``
(``alpha_f = 0.1``), which the paper's OLMo fork ran. We follow OLMo's step convention: its trainer
increments ``global_step`` before the update and evaluates the scheduler there, i.e. at the
1-based number of the update being taken (``t = step + 1``). With W warmup updates, updates
1..W-1 ramp up, update W is the first at the peak (warmup "over the first W steps"), and the last
update (t = total) uses exactly the final learning rate.

The warmup starts at ``warmup_start_fraction`` x peak: OLMo's ``warmup_min_lr``, which defaults
to 0.1 x peak when unset. The paper's sweep left it unset: the loss-to-loss sweep script, kept in
KempnerInstitute/systems-scaling (``olmo/configs/sweeps/scale.py``: the same budgets, depths,
2 < D/N < 200 filter and "570 jobs"), sets only ``scheduler.t_warmup = steps // 5`` over a base
config without ``warmup_min_lr``, in an OLMo whose ``_linear_warmup`` starts at 0.1 x peak. So the
paper recipe warms up from 0.1 x peak over floor(steps / 5) updates; OLMo-ladder sets
``warmup_min_lr=0.0`` and warms up from 0.

Warmup-stable-decay (``wsd``; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
Beyond Fixed Training Durations"): after the warmup the learning rate stays at the peak, and the
last ``floor(decay_fraction x total)`` updates decay it to the final value, ``linear`` or
``1-sqrt`` (their recommended shape: ``1 - sqrt(progress)``). Until its decay a run is the same
whatever its length, so runs of one model to several token counts share one *trunk* and each is
a short decay *branched* off it at ``decay_start`` (``training.branches``); a cooldown of about
20% matches cosine's final loss.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["cosine", "linear", "constant", "wsd"]
DecayShape = Literal["linear", "1-sqrt"]


def warmup_steps_for(
    total_steps: int, warmup_fraction: float, warmup_tokens: int | None, tokens_per_step: int
) -> int:
    """Number of warmup updates: ``warmup_tokens`` when given (OLMo-ladder's
    ``round(N / tokens per step)``), else ``floor(warmup_fraction * total_steps)`` (the loss-to-loss
    sweep script sets ``t_warmup = steps // 5``); never more than the run."""
    if warmup_tokens is not None:
        warmup = round(warmup_tokens / tokens_per_step)
    else:  # the epsilon keeps 0.2 x 1095 = 218.99999... from flooring to 218
        warmup = math.floor(warmup_fraction * total_steps + 1e-9)
    return max(0, min(warmup, total_steps))


def decay_steps_for(total_steps: int, decay_fraction: float) -> int:
    """Updates of a WSD run's decay: ``floor(decay_fraction * total_steps)`` (the warmup's
    rounding), at least one when the fraction is positive, never more than the run."""
    if decay_fraction <= 0:
        return 0
    return max(1, min(total_steps, math.floor(decay_fraction * total_steps + 1e-9)))


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """The 0-based step of a WSD run's first decayed update: the updates before it (steps
    ``0 .. decay_start - 1``) are the warmup and the stable phase, which every run of the same
    trunk shares; a branch leaves its trunk's checkpoint at this step."""
    return total_steps - decay_steps_for(total_steps, decay_fraction)


def lr_at_step(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    final_lr_fraction: float = 0.1,
    warmup_start_fraction: float = 0.0,
    kind: ScheduleKind = "cosine",
    decay_steps: int = 0,
    decay_shape: DecayShape = "linear",
) -> float:
    """Learning rate of the update at 0-based ``step`` of a ``total_steps``-update run.

    Warmup: linear from ``warmup_start_fraction * peak_lr`` to ``peak_lr`` over ``warmup_steps``
    updates. Decay (after warmup, up to the last update): ``cosine`` or ``linear`` from the peak
    to ``final_lr_fraction * peak_lr``; ``constant`` stays at the peak; ``wsd`` stays at the
    peak until its last ``decay_steps`` updates, which decay ``linear`` or ``1-sqrt`` to the
    final value. Steps past the end keep the final learning rate.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    t = step + 1  # OLMo evaluates its scheduler at the 1-based update count
    eta_min = peak_lr * final_lr_fraction
    if t < warmup_steps:
        start = peak_lr * warmup_start_fraction
        return start + (peak_lr - start) * t / warmup_steps
    if kind == "constant":
        return peak_lr
    if kind == "wsd":
        stable_end = total_steps - decay_steps  # updates 1..stable_end at the peak
        if decay_steps < 1 or t <= stable_end:
            return peak_lr
        progress = min(1.0, (t - stable_end) / decay_steps)  # 1/decay .. 1 at the last update
        if decay_shape == "linear":
            return peak_lr - (peak_lr - eta_min) * progress
        if decay_shape == "1-sqrt":
            return eta_min + (peak_lr - eta_min) * (1.0 - math.sqrt(progress))
        raise ValueError(f"unknown decay shape {decay_shape!r}; expected linear or 1-sqrt")
    if t >= total_steps:
        return eta_min
    progress = (t - warmup_steps) / (total_steps - warmup_steps)
    if kind == "cosine":
        return eta_min + (peak_lr - eta_min) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if kind == "linear":
        return peak_lr - (peak_lr - eta_min) * progress
    raise ValueError(f"unknown schedule kind {kind!r}; expected cosine, linear, constant or wsd")
