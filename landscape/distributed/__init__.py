r"""Scale out on ``torch.distributed``, launched with ``torchrun``.

``torchrun --nproc_per_node N -m landscape score|curvature|surface ...`` runs one process per
rank (gloo on CPU, NCCL on CUDA); one process runs the same code with no process group
(:mod:`~landscape.distributed.group`). What is distributed and how:

* **data** (curvature products, risks, gradients, dense matrices, the inconsistency score):
  each domain is split into exact contiguous shards, no sample padded or repeated
  (:mod:`~landscape.distributed.shard`); a rank computes its shard's mean with the
  single-process code, and one all-reduce per product (a block of ``k`` vectors in one
  collective) gives the domain's mean :math:`\frac1N\sum_r n_r \bar q_r`
  (:mod:`~landscape.distributed.operator`). Never DDP (no double backward).
* **eigensolvers** keep replicated state, seeded identically: every rank runs the same
  iteration on the same reduced products; each product carries checksums of its input
  vectors in the same collective, and each solve ends with a checksum of its result
  (:func:`check_replicas`), so replicas that drift raise :class:`ReplicaDriftError` on every
  rank instead of summing unrelated vectors.
* **surfaces**: grid rows are dealt to ranks, the directions are checked equal by checksum,
  each rank saves its finished rows (resumable), and the rows are gathered once at the end
  (:mod:`~landscape.distributed.surface`).
* **failures**: a rank that raises reports its message through the rendezvous store; the
  others stop at their next collective with :class:`RankFailedError` naming it.
* **writes**: only rank 0 writes files (:func:`writes_here`), and saved results record
  ``"distributed": {"world_size", "backend", "shares"}`` (each rank's share of every domain
  or of the grid).
"""

from landscape.distributed.group import (
    STATS,
    DistributedError,
    RankFailedError,
    ReplicaDriftError,
    all_reduce,
    backend,
    barrier,
    check_peers,
    every_rank_writes,
    init,
    is_initialized,
    is_root,
    launched,
    local_rank,
    rank,
    report_failure,
    session,
    shutdown,
    world_size,
    writes_here,
)
from landscape.distributed.launch import run_ranks
from landscape.distributed.shard import (
    ShardInfo,
    check_replicas,
    describe,
    mean_over_ranks,
    record_share,
    shard_bounds,
    shard_data,
    shard_domains,
    shard_of,
    shares,
    total_samples,
)

__all__ = [
    "STATS", "DistributedError", "RankFailedError", "ReplicaDriftError", "all_reduce", "backend",
    "barrier", "check_peers", "every_rank_writes", "init", "is_initialized", "is_root",
    "launched", "local_rank", "rank", "report_failure", "session", "shutdown", "world_size",
    "writes_here", "run_ranks", "ShardInfo", "check_replicas", "describe", "mean_over_ranks",
    "record_share", "shard_bounds", "shard_data", "shard_domains", "shard_of", "shares",
    "total_samples",
]  # fmt: skip
