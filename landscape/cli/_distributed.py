"""The commands under ``torchrun --nproc_per_node N -m landscape COMMAND ...``.

Each rank runs the whole command; the process group is set up from torchrun's environment
(:mod:`landscape.distributed`), the library shards the work, rank 0 prints, shows progress
bars and writes the files, the other ranks run quietly. One process: nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import warnings

#: the commands that run under torchrun (the others are one-process commands)
DISTRIBUTED_COMMANDS = ("score", "curvature", "surface")


@contextlib.contextmanager
def launched_command(args):
    """Run the block as one rank of a torchrun launch (a no-op in a single process)."""
    from landscape.distributed import launched

    if not launched():
        yield
        return
    if args.command not in DISTRIBUTED_COMMANDS:
        raise ValueError(
            f"landscape {args.command} runs as one process; run it without torchrun (torchrun "
            f"runs {', '.join(DISTRIBUTED_COMMANDS)})"
        )
    from landscape.device import resolve_device
    from landscape.distributed import is_root, local_rank, session

    device = resolve_device(getattr(args, "device", "auto"))
    if device.type == "cuda":  # one GPU per rank of this machine
        device = resolve_device(f"cuda:{local_rank()}")
        args.device = str(device)
    with session(device):
        if is_root():
            yield
            return
        args.quiet = True
        with (
            open(os.devnull, "w") as sink,
            contextlib.redirect_stdout(sink),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
