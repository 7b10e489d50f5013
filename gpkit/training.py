"""One trainer for every gpkit model and solver: :func:`fit`.

``fit`` looks at what the object offers and picks the loop:

1. ``obj.batch_loss(index)`` and ``obj.num_data`` → minibatch Adam over shuffled index batches
   (variational models such as DKLGP and SWSGP; the loss is a per-datum negative ELBO estimate).
2. ``obj.loss()`` → full-batch optimisation (Adam or L-BFGS), e.g. the Kronecker PDE solver.
3. a GPyTorch ``ApproximateGP`` → minibatch negative ``VariationalELBO`` with ``num_data = n``.
4. a GPyTorch ``ExactGP`` → full-batch negative exact marginal log likelihood.

Objects may tune the loop with ``fit_defaults`` (a dict of default options), ``on_epoch_end(epoch)``
(return ``True`` after replacing parameters, so the optimizer is rebuilt) and ``should_stop(state)``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gpytorch
import torch
from torch import Tensor

from gpkit import distributed as _dist  # [distributed] data-parallel hooks (no-ops on one process)

__all__ = ["FitState", "fit", "make_optimizer"]

_DEFAULTS = {
    "minibatch": {"epochs": 20, "lr": 0.01, "batch_size": 256, "optimizer": "adam", "tol": 0.0, "patience": 5},
    "fullbatch": {"max_iter": 500, "lr": 0.01, "optimizer": "adam", "tol": 1e-9, "patience": 50},
}
_OPTIONS = {
    "epochs", "max_iter", "lr", "batch_size", "optimizer", "schedule", "progress", "seed", "callback",
    "tol", "patience", "train_X", "train_Y", "likelihood", "betas",
}


@dataclass
class FitState:
    """What a callback or ``should_stop`` sees after each epoch (minibatch) or iteration (full batch)."""

    iteration: int
    epoch: int
    loss: float
    elapsed: float
    history: list[float] = field(default_factory=list)


def fit(obj, **options):
    """Train a gpkit model or solver (or a plain GPyTorch model) in place and return it.

    :param obj: the model or solver to train.
    :param epochs: passes over the data (minibatch mode).
    :param max_iter: optimizer steps (full-batch mode); in minibatch mode an optional cap on steps.
    :param lr: learning rate.
    :param batch_size: minibatch size (minibatch mode).
    :param optimizer: ``"adam"`` or ``"lbfgs"`` (L-BFGS only in full-batch mode).
    :param schedule: ``None`` or ``"cosine"`` (decays the learning rate to lr/100 over the run).
    :param betas: Adam's ``(beta1, beta2)`` (default ``(0.9, 0.999)``); a smaller beta2 adapts faster when
        early gradients are huge.
    :param progress: show a progress bar; default: only when stderr is a terminal.
    :param seed: seed for the batch order (and anything else drawn during training).
    :param callback: ``callback(FitState)``; returning ``True`` stops training.
    :param tol: stop when the relative improvement of the best loss over ``patience`` epochs/iterations
        is below ``tol`` (0 disables).
    :param patience: see ``tol``.
    :param train_X: training inputs for a GPyTorch ``ApproximateGP`` that does not store its data.
    :param train_Y: training targets, same.
    :param likelihood: likelihood for a GPyTorch model that does not carry one as ``.likelihood``.
    :return: ``obj``, trained, in eval mode, with ``obj.fit_history`` (loss per epoch or iteration).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"fit() got unknown option(s) {sorted(unknown)}; known options: {sorted(_OPTIONS)}")
    if options.get("seed") is not None:
        torch.manual_seed(options["seed"])

    if hasattr(obj, "batch_loss") and hasattr(obj, "num_data"):
        return _minibatch_loop(obj, obj.batch_loss, int(obj.num_data), obj, options)
    if hasattr(obj, "loss") and callable(obj.loss):
        return _fullbatch_loop(obj, obj.loss, obj, options)
    if isinstance(obj, gpytorch.models.ApproximateGP):
        batch_loss, num_data, module = _variational_elbo_loss(obj, options)
        return _minibatch_loop(obj, batch_loss, num_data, module, options)
    if isinstance(obj, gpytorch.models.ExactGP):
        loss, module = _exact_mll_loss(obj, options)
        return _fullbatch_loop(obj, loss, module, options)
    raise TypeError(
        f"fit() cannot train a {type(obj).__name__}: expected a gpkit model/solver (with batch_loss or loss) "
        "or a GPyTorch ApproximateGP / ExactGP."
    )


# --------------------------------------------------------------------------------------------- losses
def _training_data(model, options) -> tuple[Tensor, Tensor]:
    X, Y = options.get("train_X"), options.get("train_Y")
    if X is None:
        inputs = getattr(model, "train_inputs", None)
        X = inputs[0] if isinstance(inputs, tuple | list) else inputs
    if Y is None:
        Y = getattr(model, "train_targets", None)
    if X is None or Y is None:
        raise ValueError("fit() needs train_X and train_Y for a model that does not store its training data")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"train_X has {X.shape[0]} rows but train_Y has {Y.shape[0]}")
    if Y.dim() == 2 and Y.shape[-1] == 1:
        Y = Y.squeeze(-1)
    return X, Y


def _likelihood(model, options):
    likelihood = options.get("likelihood") or getattr(model, "likelihood", None)
    if likelihood is None:
        raise ValueError("fit() needs a likelihood: pass likelihood=... or set model.likelihood")
    return likelihood


def _variational_elbo_loss(model, options):
    X, Y = _training_data(model, options)
    likelihood = _likelihood(model, options)
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=X.shape[0])
    # Train the likelihood with the model when it is not a submodule already.
    module = model if any(m is likelihood for m in model.modules()) else torch.nn.ModuleList([model, likelihood])

    def batch_loss(index: Tensor) -> Tensor:
        return -mll(model(X[index]), Y[index])

    return batch_loss, X.shape[0], module


def _exact_mll_loss(model, options):
    X, Y = _training_data(model, options)
    likelihood = _likelihood(model, options)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    return (lambda: -mll(model(X), Y)), model


# ---------------------------------------------------------------------------------------------- loops
def _resolve(obj, options, mode: str) -> dict:
    resolved = dict(_DEFAULTS[mode])
    resolved.update(getattr(obj, "fit_defaults", None) or {})
    resolved.update({k: v for k, v in options.items() if v is not None})
    for name in ("epochs", "max_iter", "batch_size", "patience"):
        value = resolved.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(resolved["lr"], float | int) and resolved["lr"] > 0):
        raise ValueError(f"lr must be a positive number, got {resolved['lr']!r}")
    if resolved.get("optimizer") not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {resolved.get('optimizer')!r}")
    if resolved.get("schedule") not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {resolved.get('schedule')!r}")
    if resolved.get("progress") is None:
        resolved["progress"] = sys.stderr.isatty()
    return resolved


class _Optimizers:
    """Several optimizers (and their schedulers) stepped as one."""

    def __init__(self, optimizers, schedulers):
        self.optimizers, self.schedulers = optimizers, schedulers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        if closure is not None and len(self.optimizers) == 1:  # L-BFGS needs the closure itself
            loss = self.optimizers[0].step(closure)
        else:
            loss = closure() if closure is not None else None
            for optimizer in self.optimizers:
                optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()
        return loss


def make_optimizer(obj, lr: float = 0.01, betas: tuple[float, float] | None = None):
    """The optimizer :func:`gpkit.fit` uses in minibatch mode, for code that drives its own steps (e.g. a
    benchmark timing single steps): Adam, plus ``SparseAdam`` for ``obj.sparse_parameters()``.

    :return: an object with ``zero_grad()`` and ``step()``.
    """
    return _make_optimizer(obj, obj, {"lr": lr, "betas": betas, "optimizer": "adam"}, total_steps=1)


def _make_optimizer(obj, module: torch.nn.Module, opts: dict, total_steps: int):
    """Adam (or L-BFGS) over the trainable parameters; ``torch.optim.SparseAdam`` for the parameters that
    ``obj.sparse_parameters()`` names (their gradients are sparse: a minibatch touches only some rows, so a
    step costs O(batch) instead of O(all rows))."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    sparse_fn = getattr(obj, "sparse_parameters", None)
    sparse = [p for p in (sparse_fn() if sparse_fn is not None else []) if p.requires_grad]
    if opts["optimizer"] == "lbfgs":
        if sparse:
            raise ValueError("optimizer='lbfgs' cannot train parameters with sparse gradients; use 'adam'")
        optimizer = torch.optim.LBFGS(params, lr=opts["lr"], max_iter=1, line_search_fn="strong_wolfe")
        optimizers = [optimizer]
    else:
        dense = [p for p in params if all(p is not q for q in sparse)]
        betas = tuple(opts.get("betas") or (0.9, 0.999))
        optimizers = [torch.optim.Adam(dense, lr=opts["lr"], betas=betas)] if dense else []
        if sparse:
            optimizers.append(torch.optim.SparseAdam(sparse, lr=opts["lr"], betas=betas))
    schedulers = []
    if opts.get("schedule") == "cosine":
        schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total_steps, eta_min=opts["lr"] / 100)
            for o in optimizers
        ]
    return _Optimizers(optimizers, schedulers)


class _Tracker:
    """Progress bar, callbacks, convergence and NaN handling shared by both loops."""

    def __init__(self, obj, module, opts, total: int, unit: str):
        self.obj, self.module, self.opts, self.unit = obj, module, opts, unit
        self.history: list[float] = []
        self.start = time.perf_counter()
        self.good_state = copy.deepcopy(module.state_dict())
        self.good_label = "the initial state"
        self.bar = None
        if opts["progress"]:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=f"fit {type(obj).__name__}", dynamic_ncols=True)

    def check_finite(self, loss: Tensor, where: str) -> None:
        if not torch.isfinite(loss):
            self.module.load_state_dict(self.good_state)
            self.close()
            raise FloatingPointError(
                f"fit(): the loss became {loss.item()} at {where}; parameters were restored to "
                f"{self.good_label}. Try a smaller lr, float64 inputs, or check the data for NaN/inf."
            )

    def step_done(self, iteration: int, epoch: int, loss: float, snapshot: bool) -> bool:
        """Record one epoch/iteration; returns True when training should stop."""
        self.history.append(loss)
        if snapshot:
            self.good_state = copy.deepcopy(self.module.state_dict())
            self.good_label = f"the state after {self.unit} {iteration if self.unit == 'it' else epoch} (loss {loss:.6g})"
        elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.5g}", epoch=epoch, refresh=False)
            self.bar.update(1)
        state = FitState(iteration=iteration, epoch=epoch, loss=loss, elapsed=elapsed, history=self.history)
        if self.opts.get("callback") is not None and self.opts["callback"](state):
            return True
        should_stop = getattr(self.obj, "should_stop", None)
        if should_stop is not None and should_stop(state):
            return True
        return self._converged()

    def _converged(self) -> bool:
        tol, patience = self.opts.get("tol") or 0.0, self.opts["patience"]
        if tol <= 0 or len(self.history) <= patience:
            return False
        before = min(self.history[:-patience])
        recent = min(self.history[-patience:])
        return before - recent <= tol * max(abs(before), 1.0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _minibatch_loop(obj, batch_loss: Callable[[Tensor], Tensor], num_data: int, module, options):
    opts = _resolve(obj, options, "minibatch")
    if opts["optimizer"] != "adam":
        raise ValueError("optimizer='lbfgs' needs full-batch training; minibatch training uses 'adam'")
    if num_data < 1:
        raise ValueError("fit() got no training data (num_data = 0)")
    batch_size = min(opts["batch_size"], num_data)
    batches_per_epoch = math.ceil(num_data / batch_size)
    epochs = opts["epochs"]
    if opts.get("max_iter") is not None and "epochs" not in options:
        epochs = math.ceil(opts["max_iter"] / batches_per_epoch)
    max_steps = opts.get("max_iter") or epochs * batches_per_epoch
    device = next(module.parameters()).device
    generator = torch.Generator().manual_seed(int(opts.get("seed") or 0))

    obj.train()
    _dist.broadcast_module(module)  # [distributed] every rank starts from rank 0's parameters and buffers
    batch_loss = _dist.wrap_loss(batch_loss)  # [distributed] loss value: the mean over ranks
    opts["progress"] = opts["progress"] and _dist.rank() == 0  # [distributed] progress bar on rank 0 only
    optimizer = _make_optimizer(obj, module, opts, max_steps)
    tracker = _Tracker(obj, module, opts, epochs, "epoch")
    step = 0
    try:
        for epoch in range(1, epochs + 1):
            permutation = torch.randperm(num_data, generator=generator).to(device)
            total = 0.0
            for index in _dist.shard(permutation, batch_size):  # [distributed] this rank's share of each batch
                optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(index)
                tracker.check_finite(loss, f"epoch {epoch}, step {step + 1}")
                loss.backward()
                _dist.average_gradients(obj, module)  # [distributed] mean gradient over ranks
                optimizer.step()
                total += loss.item() * index.numel()
                step += 1
                if step >= max_steps:
                    break
            epoch_loss = _dist.epoch_mean(total, num_data)  # [distributed] mean over all ranks' rows
            if getattr(obj, "on_epoch_end", None) is not None and obj.on_epoch_end(epoch):
                optimizer = _make_optimizer(obj, module, opts, max(max_steps - step, 1))
            _dist.broadcast_module(module)  # [distributed] ranks stay identical after the epoch hook
            if _dist.agree(tracker.step_done(step, epoch, epoch_loss, snapshot=True)) or step >= max_steps:
                break
    finally:
        tracker.close()
    obj.fit_history = tracker.history
    obj.eval()
    return obj


def _fullbatch_loop(obj, loss_fn: Callable[[], Tensor], module, options):
    if _dist.is_distributed():  # [distributed] full-batch training does not distribute: rank 0 trains alone
        return _dist.train_on_rank0(obj, module, lambda: _fullbatch_loop(obj, loss_fn, module, options))
    opts = _resolve(obj, options, "fullbatch")
    max_iter = opts["max_iter"]
    obj.train()
    optimizer = _make_optimizer(obj, module, opts, max_iter)
    tracker = _Tracker(obj, module, opts, max_iter, "it")
    snapshot_every = max(1, max_iter // 20)
    try:
        for iteration in range(1, max_iter + 1):
            last = {}

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn()
                tracker.check_finite(loss, f"iteration {iteration}")
                loss.backward()
                last["loss"] = loss.item()
                return loss

            optimizer.step(closure)
            if tracker.step_done(iteration, 0, last["loss"], snapshot=iteration % snapshot_every == 0):
                break
    finally:
        tracker.close()
    obj.fit_history = tracker.history
    obj.eval()
    return obj
