"""One trainer for every gpkit model and solver: :func:`fit`.

``fit`` looks at which hooks of :class:`FitHooks` the object offers and picks the loop:

1. ``obj.batch_loss(index)`` and ``obj.num_data`` → minibatch Adam over shuffled index batches
   (variational models such as DKLGP and SWSGP; the loss is a per-datum negative ELBO estimate).
2. ``obj.loss()`` → full-batch optimisation (Adam or L-BFGS), then ``obj.finish()`` if it has one, e.g. the
   Kronecker PDE solver (Adam on its joint, then its collocation finish).
3. a GPyTorch ``ApproximateGP`` → minibatch negative ``VariationalELBO`` with ``num_data = n``.
4. a GPyTorch ``ExactGP`` → BoTorch's ``fit_gpytorch_mll`` on the exact marginal log likelihood
   (L-BFGS-B to convergence); passing ``lr`` or ``optimizer`` selects gpkit's full-batch loop instead.

Minibatch defaults converge at every n: unless ``epochs`` is given, training runs at least
``min_steps`` optimizer steps (default 1000) and at most ``max(epochs * batches per epoch, 3000)``
steps (``epochs`` from ``fit_defaults``, default 20), and stops once the loss has improved by less than
``tol`` (relative, default 1e-3) over the last ``patience`` epochs (at least 100 steps). At large n the
cap is the epoch count, so ``min_steps`` only matters at small n.

A non-finite loss or parameter, or a failed Cholesky (linear_operator ``NotPSDError``,
``torch.linalg.LinAlgError``), restores the last good state and raises ``FloatingPointError`` saying so.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gpytorch
import torch
from linear_operator.utils.errors import NotPSDError
from torch import Tensor

from gpkit import distributed as _dist  # [distributed] data-parallel hooks (no-ops on one process)

__all__ = ["FitHooks", "FitState", "fit", "make_optimizer"]

_DEFAULTS = {
    "minibatch": {"epochs": 20, "lr": 0.01, "batch_size": 256, "optimizer": "adam", "tol": 0.0, "patience": 5},
    "fullbatch": {"max_iter": 500, "lr": 0.01, "optimizer": "adam", "tol": 1e-9, "patience": 50},
}
# minibatch mode without an explicit ``epochs``: a step floor, a step cap at small n, a convergence test
_CONVERGE = {"min_steps": 1000, "max_steps": 3000, "tol": 1e-3, "window_steps": 100}
_LOOP = {"max_iter", "lr", "optimizer", "schedule", "progress", "seed", "callback", "tol", "patience", "betas"}
_OPTIONS = {
    "minibatch": _LOOP | {"epochs", "batch_size", "min_steps"},
    "fullbatch": _LOOP,
    "approximate": _LOOP | {"epochs", "batch_size", "min_steps", "train_X", "train_Y", "likelihood"},
    "exact_botorch": {"max_iter", "seed", "progress"},
    "exact": _LOOP,
}
_ALL_OPTIONS = set().union(*_OPTIONS.values())
_FAILURES = (NotPSDError, torch.linalg.LinAlgError)


class FitHooks(Protocol):
    """The hooks :func:`fit` dispatches on (an object implements the subset it needs; all are optional).

    - ``batch_loss(index) -> Tensor`` with ``num_data``: minibatch mode; ``index`` is a LongTensor of
      training rows, the loss a per-datum scalar (e.g. negative ELBO / n).
    - ``loss() -> Tensor``: full-batch mode.
    - ``fit_defaults``: a dict of default options (e.g. ``{"lr": 0.01, "batch_size": 100}``); the user's
      options win. An ``epochs`` here is the cap at large n, not a fixed count.
    - ``on_epoch_end(epoch) -> bool | None``: called after every epoch, ``epoch`` counting from 1; return
      ``True`` after replacing parameters, so the optimizer is rebuilt.
    - ``should_stop(state: FitState) -> bool``: stop early.
    - ``sparse_parameters() -> list[Parameter]``: parameters with sparse gradients (``SparseAdam``).
    - ``finish() -> None``: full-batch mode: called once after the optimizer loop ends without failure, before
      ``eval()``; a finishing step the method needs (e.g. the PDE solver's collocation solve).
    """

    num_data: int
    fit_defaults: dict

    def batch_loss(self, index: Tensor) -> Tensor: ...

    def loss(self) -> Tensor: ...

    def on_epoch_end(self, epoch: int) -> bool | None: ...

    def should_stop(self, state: FitState) -> bool: ...

    def sparse_parameters(self) -> list[torch.nn.Parameter]: ...

    def finish(self) -> None: ...


def _hook(obj, name: str):
    """``obj``'s implementation of the :class:`FitHooks` member ``name``, or ``None``."""
    assert name in FitHooks.__annotations__ or hasattr(FitHooks, name), name
    return getattr(obj, name, None)


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
    :param epochs: passes over the data (minibatch mode): exactly this many when given; otherwise training
        converges (see the module docstring).
    :param max_iter: optimizer steps (full-batch mode; L-BFGS-B iterations for a plain ``ExactGP``); in
        minibatch mode a fixed step budget.
    :param min_steps: the least number of optimizer steps in the default (converging) minibatch mode.
    :param lr: learning rate.
    :param batch_size: minibatch size (minibatch mode).
    :param optimizer: ``"adam"`` or ``"lbfgs"`` (L-BFGS only in full-batch mode, or in minibatch mode when one
        batch holds all the data).
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
    unknown = set(options) - _ALL_OPTIONS
    if unknown:
        raise TypeError(f"fit() got unknown option(s) {sorted(unknown)}; known options: {sorted(_ALL_OPTIONS)}")
    if _hook(obj, "batch_loss") is not None and _hook(obj, "num_data") is not None:
        mode = "minibatch"
    elif callable(_hook(obj, "loss")):
        mode = "fullbatch"
    elif isinstance(obj, gpytorch.models.ApproximateGP):
        mode = "approximate"
    elif isinstance(obj, gpytorch.models.ExactGP):
        mode = "exact" if {"lr", "optimizer"} & set(options) else "exact_botorch"
    else:
        raise TypeError(
            f"fit() cannot train a {type(obj).__name__}: expected a gpkit model/solver (with batch_loss or loss) "
            "or a GPyTorch ApproximateGP / ExactGP."
        )
    cannot = sorted(set(options) - _OPTIONS[mode])
    if cannot:
        why = {
            "minibatch": "it stores its own training data and likelihood",
            "fullbatch": "it is trained full-batch on its own loss()",
            "exact_botorch": "a plain ExactGP is fitted by BoTorch's fit_gpytorch_mll (pass lr= or optimizer= "
            "for gpkit's full-batch loop)",
        }.get(mode, "it does not use them")
        raise TypeError(f"fit() option(s) {cannot} cannot be used with {type(obj).__name__}: {why}")
    if options.get("seed") is not None:
        torch.manual_seed(options["seed"])

    if mode == "minibatch":
        return _minibatch_loop(obj, obj.batch_loss, int(obj.num_data), obj, options)
    if mode == "fullbatch":
        return _fullbatch_loop(obj, obj.loss, obj, options)
    if mode == "approximate":
        batch_loss, num_data, module = _variational_elbo_loss(obj, options)
        return _minibatch_loop(obj, batch_loss, num_data, module, options)
    if mode == "exact_botorch":
        return _fit_exact_botorch(obj, options)
    loss, module = _exact_mll_loss(obj, options)
    return _fullbatch_loop(obj, loss, module, options)


def _fit_exact_botorch(model, options):
    """BoTorch's ``fit_gpytorch_mll`` (scipy L-BFGS-B) on the exact marginal log likelihood."""
    if _dist.is_distributed():  # [distributed] full-batch training does not distribute: rank 0 trains alone
        return _dist.train_on_rank0(model, model, lambda: _fit_exact_botorch(model, options))
    from botorch import fit as botorch_fit
    from botorch.exceptions.errors import ModelFittingError
    from botorch.optim.closures import ForwardBackwardClosure
    from botorch.optim.fit import fit_gpytorch_mll_scipy

    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    params = {name: p for name, p in mll.named_parameters() if p.requires_grad}
    # BoTorch's default closure calls model.transform_inputs, which a plain GPyTorch ExactGP lacks
    closure = ForwardBackwardClosure(lambda: -mll(model(*model.train_inputs), model.train_targets), params)
    kwargs = {"options": {"maxiter": int(options["max_iter"])}} if options.get("max_iter") is not None else {}
    good = copy.deepcopy(mll.state_dict())
    mll.train()
    with torch.no_grad():
        history = [float(closure.forward())]
    try:
        botorch_fit.fit_gpytorch_mll(mll, closure=closure, optimizer=fit_gpytorch_mll_scipy, optimizer_kwargs=kwargs)
    except (*_FAILURES, ModelFittingError) as error:
        mll.load_state_dict(good)
        raise FloatingPointError(
            f"fit(): fit_gpytorch_mll failed ({type(error).__name__}: {error}); parameters were restored to the "
            "initial state. Add priors/constraints, or pass lr= for gpkit's Adam loop."
        ) from error
    mll.train()
    with torch.no_grad():
        history.append(float(closure.forward()))
    model.fit_history = history  # the loss before and after
    mll.eval()
    return model


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
    for name in ("epochs", "max_iter", "batch_size", "patience", "min_steps"):
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
        # one iteration per step; max_eval leaves the strong-Wolfe search its evaluations (torch's default,
        # max_iter * 5 // 4 = 1, would accept any trial step unchecked)
        optimizer = torch.optim.LBFGS(params, lr=opts["lr"], max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
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

    def fail(self, what: str, where: str, error: Exception | None = None):
        """Restore the last good state and raise ``FloatingPointError``."""
        self.module.load_state_dict(self.good_state)
        self.close()
        raise FloatingPointError(
            f"fit(): {what} at {where}; parameters were restored to {self.good_label}. "
            "Try a smaller lr, float64 inputs, or check the data for NaN/inf."
        ) from error

    def loss(self, fn: Callable[[], Tensor], where: str) -> Tensor:
        """``fn()``, with a failed Cholesky or a non-finite value turned into :meth:`fail`."""
        try:
            loss = fn()
        except _FAILURES as error:
            self.fail(f"{type(error).__name__} ({str(error)[:120]})", where, error)
        if not torch.isfinite(loss):
            self.fail(f"the loss became {loss.item()}", where)
        return loss

    def check_parameters(self, where: str) -> None:
        bad = [name for name, p in self.module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            self.fail(f"parameter(s) {bad[:3]} became non-finite", where)

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
        if self.unit == "epoch" and self.opts.get("_step", 0) < self.opts.get("min_steps", 0):
            return False
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
    if num_data < 1:
        raise ValueError("fit() got no training data (num_data = 0)")
    batch_size = min(opts["batch_size"], num_data)
    if opts["optimizer"] != "adam" and batch_size < num_data:
        raise ValueError("optimizer='lbfgs' needs full-batch training (batch_size >= the data); minibatches use 'adam'")
    batches_per_epoch = math.ceil(num_data / batch_size)
    epochs = opts["epochs"]
    if "epochs" in options:  # an explicit epoch count: exactly that many (or max_iter steps)
        opts["min_steps"] = 0
        max_steps = opts.get("max_iter") or epochs * batches_per_epoch
    elif opts.get("max_iter") is not None:
        max_steps = opts["max_iter"]
        opts["min_steps"] = min(opts.get("min_steps") or 0, max_steps)
        epochs = math.ceil(max_steps / batches_per_epoch)
    else:  # the default: converge (see the module docstring)
        opts.setdefault("min_steps", _CONVERGE["min_steps"])
        max_steps = max(epochs * batches_per_epoch, _CONVERGE["max_steps"], opts["min_steps"])
        epochs = math.ceil(max_steps / batches_per_epoch)
        if "tol" not in options:
            opts["tol"] = _CONVERGE["tol"]
        if "patience" not in options:
            opts["patience"] = max(opts["patience"], math.ceil(_CONVERGE["window_steps"] / batches_per_epoch))
    device = next(module.parameters()).device
    generator = torch.Generator().manual_seed(int(opts.get("seed") or 0))
    on_epoch_end = _hook(obj, "on_epoch_end")
    snapshot_every = math.ceil(10 / batches_per_epoch)  # a good-state copy at least every 10 steps

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

                def closure(index=index):  # L-BFGS calls it several times per step
                    optimizer.zero_grad(set_to_none=True)
                    loss = tracker.loss(lambda: batch_loss(index), f"epoch {epoch}, step {step + 1}")  # noqa: B023
                    loss.backward()
                    _dist.average_gradients(obj, module)  # [distributed] mean gradient over ranks
                    return loss

                loss = optimizer.step(closure)
                total += loss.item() * index.numel()
                step += 1
                if step >= max_steps:
                    break
            epoch_loss = _dist.epoch_mean(total, num_data)  # [distributed] mean over all ranks' rows
            tracker.check_parameters(f"the end of epoch {epoch}")
            if on_epoch_end is not None and on_epoch_end(epoch):
                optimizer = _make_optimizer(obj, module, opts, max(max_steps - step, 1))
            _dist.broadcast_module(module)  # [distributed] ranks stay identical after the epoch hook
            opts["_step"] = step
            snapshot = epoch % snapshot_every == 0 or step >= max_steps
            # [distributed] rank 0's stop decision binds every rank
            if _dist.agree(tracker.step_done(step, epoch, epoch_loss, snapshot=snapshot)) or step >= max_steps:
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
                loss = tracker.loss(loss_fn, f"iteration {iteration}")  # noqa: B023 (called at once)
                loss.backward()
                last["loss"] = loss.item()  # noqa: B023
                return loss

            optimizer.step(closure)
            snapshot = iteration % snapshot_every == 0
            if snapshot:
                tracker.check_parameters(f"iteration {iteration}")
            if tracker.step_done(iteration, 0, last["loss"], snapshot=snapshot):
                break
    finally:
        tracker.close()
    obj.fit_history = tracker.history
    finish = _hook(obj, "finish")
    if finish is not None:
        finish()
    obj.eval()
    return obj
