"""Data-parallel training under ``torch.distributed`` (what :func:`gpkit.fit` does under ``torchrun``).

When a process group is initialised with more than one rank, :func:`gpkit.fit`'s minibatch loop

1. starts every rank from rank 0's parameters and buffers (:func:`broadcast_module`), whatever each rank
   was seeded with;
2. shards every epoch's permutation like ``torch.utils.data.DistributedSampler`` (:func:`shard`): rank 0's
   permutation, padded with its head to a multiple of the world size, rank ``r`` taking rows ``r::world``;
   ``batch_size`` is the *global* batch (the union over ranks), each rank takes ``ceil(batch_size / world)``
   rows a step, so an epoch has as many steps as on one process;
3. averages the gradients over ranks after every backward pass (:func:`average_gradients`): one all-reduce
   of the dense gradients, and for sparse-gradient parameters (``obj.sparse_parameters()``, trained by
   ``SparseAdam``) an all-gather of the touched rows, summed and coalesced, so every rank steps on the
   union of the touched rows. Because gpkit's losses are per-datum negative ELBO estimates, the mean of
   the ranks' estimates on equal-sized local batches *is* the one-process estimate on the union batch (its
   likelihood term scaled by ``n / batch``, its KL once): the averaged gradient equals the one-process
   gradient on the union batch, and the ELBO needs no other rescaling (``num_data`` stays the full ``n``);
4. reports the mean loss over ranks (:func:`wrap_loss`, :func:`epoch_mean`), so that every rank sees the
   same loss history, a non-finite loss on any rank stops all ranks together, and rank 0's stop decision
   (convergence, callbacks) binds every rank (:func:`agree`); the progress bar shows on rank 0 only.

Full-batch solvers (the Kronecker PDE solver, the Cox process, exact GPs) do not distribute: under a
process group :func:`train_on_rank0` trains them on rank 0 alone and broadcasts the result; the other ranks
wait (the process group's timeout must exceed the solve).

Every rank holds the full training data (DKLGP's and SWSGP's neighbour structures are global), so the data
cost ``world x`` one process's memory; the gain is compute per step. With one process (or inside
:func:`local`) every function here is a no-op and ``fit`` behaves exactly as without a process group.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "agree",
    "average_gradients",
    "broadcast_module",
    "epoch_mean",
    "is_distributed",
    "local",
    "rank",
    "shard",
    "train_on_rank0",
    "world_size",
    "wrap_loss",
]

_LOCAL = [0]  # depth of nested ``local()`` blocks


def is_distributed() -> bool:
    """True under an initialised process group of more than one rank (and outside :func:`local`)."""
    return _LOCAL[0] == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks training together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


@contextmanager
def local() -> Iterator[None]:
    """Within this block :func:`gpkit.fit` trains on this process alone, even under a process group."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def _comm_device(like: Tensor | None = None) -> torch.device:
    """The device collectives of small bookkeeping tensors run on (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like.device if like is not None and like.device.type == "cpu" else torch.device("cpu")


# ----------------------------------------------------------------------------------- the start
def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers (persistent or not) into every rank's ``module``, in place.

    :raises ValueError: when a rank's tensors differ in shape or dtype from rank 0's (the ranks did not
        build the same model).
    """
    if not is_distributed():
        return
    tensors, names, seen = [], [], set()
    for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, tensor in named:
            if tensor is None or id(tensor) in seen or tensor.is_sparse:
                continue
            seen.add(id(tensor))
            tensors.append(tensor)
            names.append(f"{kind} {name!r}")
    signature = [(tuple(t.shape), str(t.dtype)) for t in tensors]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, signature)
    for other_rank, other in enumerate(gathered):
        if other != gathered[0]:
            bad = next((i for i, (a, b) in enumerate(zip(gathered[0], other)) if a != b), min(len(other), len(gathered[0])))
            what = names[bad] if bad < len(names) else "the number of parameters and buffers"
            raise ValueError(
                f"gpkit.distributed: {what} differs between rank 0 and rank {other_rank} "
                f"({gathered[0][bad] if bad < len(gathered[0]) else '-'} vs {other[bad] if bad < len(other) else '-'}); "
                "every rank must build the same model from the same data and options"
            )
    with torch.no_grad():
        for tensor in tensors:
            if tensor.dtype == torch.bool:  # gloo cannot broadcast bool
                as_bytes = tensor.to(torch.uint8)
                dist.broadcast(as_bytes, src=0)
                tensor.copy_(as_bytes.bool())
            else:
                buffer = tensor.data if tensor.is_contiguous() else tensor.data.contiguous()
                dist.broadcast(buffer, src=0)
                if buffer is not tensor.data:
                    tensor.data.copy_(buffer)


# ----------------------------------------------------------------------------------- every epoch
def shard(permutation: Tensor, batch_size: int) -> tuple[Tensor, ...]:
    """This rank's minibatches of an epoch: rank 0's ``permutation`` of the ``n`` rows, padded with its head
    to a multiple of the world size (as ``DistributedSampler`` does), strided over ranks, split into local
    batches of ``ceil(batch_size / world)`` rows. Every rank gets the same number of equal-sized batches;
    one process gets ``permutation.split(batch_size)``.

    :param permutation: LongTensor of shape ``(n,)``.
    :param batch_size: the global batch size (all ranks together).
    """
    if not is_distributed():
        return permutation.split(batch_size)
    world = dist.get_world_size()
    shared = permutation.clone()
    dist.broadcast(shared, src=0)
    n = shared.numel()
    per_rank = math.ceil(n / world)
    if per_rank * world > n:
        shared = torch.cat([shared, shared.repeat(math.ceil(per_rank * world / n))[: per_rank * world - n]])
    mine = shared[dist.get_rank() :: world]  # shape: (per_rank,)
    return mine.split(math.ceil(batch_size / world))


def epoch_mean(total: float, num_data: int) -> float:
    """The epoch's mean loss from this rank's ``total`` (sum of the step losses of :func:`wrap_loss` times
    the local batch sizes): equal on every rank, the mean over the union of the ranks' rows."""
    if not is_distributed():
        return total / num_data
    return total / math.ceil(num_data / dist.get_world_size())


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (so that stop decisions, e.g. a callback's, bind all ranks)."""
    if not is_distributed():
        return bool(flag)
    decision = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.broadcast(decision, src=0)
    return bool(decision.item())


# ----------------------------------------------------------------------------------- every step
def wrap_loss(batch_loss: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``batch_loss`` whose returned value is the mean over ranks (its gradient stays this rank's own), so
    that a non-finite loss on any rank is seen on every rank and the loss history is shared. An exception
    in ``batch_loss`` on one rank (a failed Cholesky) shows as a NaN loss on the others, so that all ranks
    stop together (through :func:`gpkit.fit`'s restore-and-raise) instead of waiting on each other."""
    if not is_distributed():
        return batch_loss
    world = dist.get_world_size()

    def distributed_batch_loss(index: Tensor) -> Tensor:
        try:
            loss = batch_loss(index)
        except Exception:
            # e.g. a failed Cholesky on this rank's batch: the others see a NaN loss and stop with this one
            dist.all_reduce(torch.full((1,), math.nan, dtype=torch.float64, device=_comm_device()))
            raise
        mean = loss.detach().reshape(1).to(device=_comm_device(loss), dtype=torch.float64)
        dist.all_reduce(mean)
        mean = (mean / world).to(device=loss.device, dtype=loss.dtype).reshape(loss.shape)
        return loss + (mean - loss.detach())

    return distributed_batch_loss


def average_gradients(obj, module: torch.nn.Module) -> None:
    """Replace every trainable parameter's gradient by its mean over ranks, in place.

    A parameter whose gradient is ``None`` on every rank keeps ``None`` (its optimizer skips it as on one
    process); one that has a gradient on some rank only gets the mean with zeros from the others. The
    parameters ``obj.sparse_parameters()`` names keep sparse gradients: the ranks' touched rows are
    all-gathered and summed, so the result has the union of the rows. A sparse gradient on any other
    parameter is densified (the dense fallback).
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    params = [p for p in module.parameters() if p.requires_grad]
    sparse_fn = getattr(obj, "sparse_parameters", None)
    sparse_ids = {id(p) for p in (sparse_fn() if sparse_fn is not None else [])}
    dense = [p for p in params if id(p) not in sparse_ids]
    sparse = [p for p in params if id(p) in sparse_ids]
    grads = []
    for p in sparse:
        g = p.grad.coalesce() if p.grad is not None else None
        grads.append(g)

    # one all-reduce per dtype; the first also carries the has-gradient flags and the sparse row counts
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in dense:
        by_dtype.setdefault(p.dtype, []).append(p)
    meta = [float(p.grad is not None) for p in dense + sparse]
    counts = [0.0] * (len(sparse) * world)
    for i, g in enumerate(grads):
        counts[i * world + dist.get_rank()] = float(g.values().shape[0]) if g is not None else 0.0
    meta_dtype = torch.float64 if torch.float64 in by_dtype else torch.float32
    meta_tensor = torch.tensor(meta + counts, dtype=meta_dtype, device=params[0].device)
    reduced_meta = None
    for dtype, group in by_dtype.items():
        flat = [(p.grad.to_dense() if p.grad.is_sparse else p.grad).reshape(-1) if p.grad is not None
                else torch.zeros(p.numel(), dtype=dtype, device=p.device) for p in group]
        carries_meta = dtype == meta_dtype
        if carries_meta:
            flat.append(meta_tensor.to(group[0].device))
        buffer = torch.cat(flat)
        dist.all_reduce(buffer)
        if carries_meta:
            reduced_meta = buffer[buffer.numel() - meta_tensor.numel():]
        offset = 0
        for p in group:
            p.grad = (buffer[offset : offset + p.numel()] / world).view_as(p)
            offset += p.numel()
    if reduced_meta is None:  # no dense group of the bookkeeping dtype
        dist.all_reduce(meta_tensor)
        reduced_meta = meta_tensor
    flags = reduced_meta[: len(meta)].tolist()
    for p, flag in zip(dense, flags[: len(dense)]):
        if flag == 0:
            p.grad = None

    # sparse: all-gather each rank's touched rows (padded to the largest count) and coalesce their sum
    all_counts = reduced_meta[len(meta):].long().view(len(sparse), world) if sparse else None
    for i, (p, g) in enumerate(zip(sparse, grads)):
        if flags[len(dense) + i] == 0:
            p.grad = None
            continue
        rows = all_counts[i]
        largest = int(rows.max().item())
        width = p.shape[1:]
        if g is None:
            g = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long, device=p.device),
                                        torch.zeros(0, *width, dtype=p.dtype, device=p.device), p.shape,
                                        check_invariants=False)
        indices = torch.zeros(largest, dtype=torch.long, device=p.device)
        values = torch.zeros(largest, *width, dtype=p.dtype, device=p.device)
        nnz = g.values().shape[0]
        indices[:nnz] = g.indices()[0]
        values[:nnz] = g.values()
        all_indices = [torch.empty_like(indices) for _ in range(world)]
        all_values = [torch.empty_like(values) for _ in range(world)]
        dist.all_gather(all_indices, indices)
        dist.all_gather(all_values, values)
        keep = [int(c) for c in rows.tolist()]
        union_indices = torch.cat([ix[:c] for ix, c in zip(all_indices, keep)]).unsqueeze(0)
        union_values = torch.cat([v[:c] for v, c in zip(all_values, keep)]) / world
        p.grad = torch.sparse_coo_tensor(union_indices, union_values, p.shape, check_invariants=False).coalesce()


# ----------------------------------------------------------------------------------- full batch
def train_on_rank0(obj, module: torch.nn.Module, train: Callable[[], object]):
    """Full-batch training does not distribute: run ``train()`` on rank 0 alone (inside :func:`local`), then
    give every rank rank 0's parameters, buffers and ``fit_history``. A failure on rank 0 is raised on every
    rank. Returns ``obj`` in eval mode."""
    if rank() == 0:
        warnings.warn(
            f"gpkit.fit: {type(obj).__name__} trains full-batch, which does not distribute; rank 0 trains it "
            f"alone and broadcasts the result to the other {dist.get_world_size() - 1} rank(s), which wait "
            "(the process group's timeout must exceed the solve).",
            UserWarning,
            stacklevel=3,
        )
    world_rank = rank()
    status: list = [None]
    error = None
    if world_rank == 0:
        try:
            with local():
                train()
            status = [("ok", list(getattr(obj, "fit_history", [])))]
        except Exception as err:  # noqa: BLE001 - re-raised below after telling the other ranks
            error = err
            status = [("error", f"{type(err).__name__}: {err}")]
    dist.broadcast_object_list(status, src=0)
    if error is not None:
        raise error
    kind, payload = status[0]
    if kind == "error":
        raise RuntimeError(f"gpkit.fit: full-batch training failed on rank 0: {payload}")
    broadcast_module(module)
    obj.fit_history = payload
    obj.eval()
    return obj
