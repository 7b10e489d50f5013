"""Bayesian optimisation over event windows: reveal the events of one window per step, refit the Cox process on
what has been seen (its intensity integral runs over the revealed windows only), and move to the unvisited
window centre that maximises an acquisition (Mei et al. 2024, with the exclusion of ±2r around visited
centres)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

import gpkit
from gpkit.cox.geometry import check_events

_ACQUISITIONS = ("ucb", "ei", "pi", "arrivals", "idle", "changepoint")


@dataclass
class WindowSearch:
    """What :func:`reveal_windows` saw: window ``centres`` (``steps x d``, in visiting order), the events
    revealed in each step's window (``counts``), the acquisition maximum that chose each next centre
    (``values``, NaN for start windows) and the last fitted ``model``."""

    centres: Tensor
    counts: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    model: object | None = None
    revealed: Tensor | None = None


def _acquisition(name, model, window: Tensor, options: dict):
    from gpkit import acquisition as A

    if callable(name):
        return name(model)
    if name == "ucb":
        return A.IntensityUpperConfidenceBound(model, **{"beta": 4.0, **options})
    if name == "ei":
        return A.IntensityExpectedImprovement(model, **options)
    if name == "pi":
        return A.IntensityProbabilityOfImprovement(model, **options)
    if name == "arrivals":
        return A.ExpectedArrivals(model, window=window, **options)
    if name == "idle":
        return A.IdleTime(model, window=window, **options)
    return A.ChangePointScore(model, **options)


def reveal_windows(
    events: Tensor,
    bounds: Tensor,
    window: float | Tensor,
    num_steps: int,
    acquisition: str | Callable = "ucb",
    start: Tensor | None = None,
    candidates: Tensor | None = None,
    exclusion: float = 2.0,
    model_options: dict | None = None,
    fit_options: dict | None = None,
    acquisition_options: dict | None = None,
    stop: Callable[[Tensor], bool] | None = None,
) -> WindowSearch:
    """Run the window-revealing BO loop on a fully known event pattern (the events stay hidden until their
    window is visited).

    :param events: all events, ``n x d`` (the hidden ground truth).
    :param bounds: ``2 x d`` domain.
    :param window: half-width ``r`` of a window (a number or ``d`` numbers).
    :param num_steps: windows to visit in total, start windows included.
    :param acquisition: ``"ucb"``, ``"ei"``, ``"pi"``, ``"arrivals"``, ``"idle"``, ``"changepoint"`` or a callable
        ``model -> AcquisitionFunction``; it is maximised over the unvisited candidates.
    :param start: first window centre(s), ``k x d`` (default: the middle candidate).
    :param candidates: window centres, ``c x d`` (default: the model's grid cell centres).
    :param exclusion: candidates within ``exclusion * r`` (per axis) of a visited centre are dropped.
    :param model_options: keyword arguments of :class:`~gpkit.cox.GaussianCoxProcess` (``grid_size``, ``link``...).
    :param fit_options: keyword arguments of :func:`gpkit.fit`.
    :param acquisition_options: keyword arguments of the named acquisition.
    :param stop: optional ``stop(centre) -> bool``, called after each revealed window; True ends the search.
    :return: :class:`WindowSearch`.
    """
    from botorch.optim import optimize_acqf_discrete

    from gpkit.cox.model import GaussianCoxProcess

    events, bounds = check_events(events, bounds)
    d = events.shape[-1]
    half = torch.as_tensor(window, dtype=events.dtype, device=events.device).reshape(-1)
    if half.numel() not in (1, d) or not (half > 0).all() or not torch.isfinite(half).all():
        raise ValueError(f"window must be a positive half-width (a number or {d} numbers), got {window!r}")
    half = half.expand(d)
    if isinstance(exclusion, bool) or not (isinstance(exclusion, float | int) and exclusion >= 0):
        raise ValueError(f"exclusion must be a non-negative number, got {exclusion!r}")
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not (callable(acquisition) or acquisition in _ACQUISITIONS):
        raise ValueError(f"acquisition must be one of {_ACQUISITIONS} or a callable, got {acquisition!r}")
    model_options, fit_options = dict(model_options or {}), dict(fit_options or {})
    fit_options.setdefault("progress", False)
    if candidates is None:
        grid = GaussianCoxProcess(events, bounds, **model_options)
        candidates = bounds[0] + (bounds[1] - bounds[0]) * grid.cells
    candidates = torch.as_tensor(candidates).to(events)
    if candidates.dim() != 2 or candidates.shape[-1] != d:
        raise ValueError(f"candidates must be c x {d}, got shape {tuple(candidates.shape)}")
    if start is None:
        start = candidates[len(candidates) // 2 : len(candidates) // 2 + 1]
    start = torch.as_tensor(start).to(events).reshape(-1, d)

    centres, counts, values = [], [], []
    seen = torch.zeros(events.shape[0], dtype=torch.bool, device=events.device)
    remaining = torch.ones(candidates.shape[0], dtype=torch.bool, device=events.device)
    model, state = None, None
    queue = list(start)
    for _ in range(num_steps):
        if queue:
            centre, value = queue.pop(0), float("nan")
        elif model is None:  # nothing seen yet: the unvisited candidate farthest from the visited centres
            dist = torch.cdist(candidates, torch.stack(centres)).min(-1).values
            dist[~remaining] = -1
            centre, value = candidates[dist.argmax()], float("nan")
        else:
            acq = _acquisition(acquisition, model, half, dict(acquisition_options or {}))
            best, best_value = optimize_acqf_discrete(acq, q=1, choices=candidates[remaining])
            centre, value = best[0], float(best_value)
        inside = ((events >= centre - half) & (events <= centre + half)).all(-1)
        counts.append(int((inside & ~seen).sum()))
        seen |= inside
        centres.append(centre)
        remaining &= ~((candidates - centre).abs() <= exclusion * half).all(-1)
        values.append(value)
        if not remaining.any() or (stop is not None and stop(centre)):
            break
        if seen.any():
            windows = torch.stack([torch.stack([c - half, c + half]) for c in centres])
            windows = torch.maximum(torch.minimum(windows, bounds[1]), bounds[0])
            model = GaussianCoxProcess(events[seen], bounds, windows=windows, **model_options)
            if state is not None:  # warm start the hyperparameters from the previous step
                model.load_state_dict(state, strict=False)
            gpkit.fit(model, **fit_options)
            state = {k: v for k, v in model.state_dict().items() if "module" in k}
    return WindowSearch(torch.stack(centres), counts, values, model, events[seen])
