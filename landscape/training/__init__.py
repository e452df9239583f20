"""Training ERM, IRM, V-REx and Fishr on multi-domain data: loop, history, checkpoints, resume.

The default protocol is the Colored MNIST experiment of the Fishr paper (Rame et al. 2022,
Section 6.A, reusing the IRM script of Arjovsky et al. 2019): full batch (every sample of
each training domain at every step), Adam, an explicit L2 term on **all** parameters
(biases included) and a penalty weight that jumps at ``anneal_step``.

Modules:

* :mod:`~landscape.training.config`: :class:`TrainConfig` and its parts (protocol, data,
  model, run);
* :mod:`~landscape.training.penalties`: ERM / IRM / V-REx / Fishr penalties
  (:class:`~landscape.training.penalties.Penalties`);
* :mod:`~landscape.training.objective`: the objective of one step and its history row;
* :mod:`~landscape.training.trainer`: :class:`Trainer`, one (algorithm, restart) run;
* :mod:`~landscape.training.state`: the resumable state (bit-identical continuation);
* :mod:`~landscape.training.history`: ``history.csv`` I/O;
* :mod:`~landscape.training.results`: :class:`RunResults`, the results table;
* :mod:`~landscape.training.colour_split`, :mod:`~landscape.training.relu_stack`: the
  Colored MNIST step's first layer per lit channel and its hidden layers as one Function;
* :mod:`~landscape.training.loop`: :func:`train`, every (algorithm, restart) into a run
  folder (layout: :class:`landscape.runs.RunFolder`);
* :mod:`~landscape.training.workers`: several (algorithm, restart) pairs at once, one
  process each (``train(..., jobs=N)``).
"""

from landscape.runs import RunFolder, RunFolderLockedError
from landscape.training.config import (
    DTYPES,
    RESUME_FREE_KEYS,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    ProtocolConfig,
    RunConfig,
    TrainConfig,
)
from landscape.training.history import read_history, write_history
from landscape.training.loop import checkpoint_path, run_dir, train
from landscape.training.objective import Objective
from landscape.training.penalties import ALGORITHMS, DISTANCES, NonFiniteLossError, Penalties
from landscape.training.results import RunResults
from landscape.training.state import STATE_FORMAT
from landscape.training.trainer import Trainer

__all__ = [
    "ALGORITHMS",
    "DISTANCES",
    "DTYPES",
    "RESUME_FREE_KEYS",
    "SCHEDULES",
    "STATE_FORMAT",
    "DataConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "Objective",
    "Penalties",
    "ProtocolConfig",
    "RunConfig",
    "RunFolder",
    "RunFolderLockedError",
    "RunResults",
    "TrainConfig",
    "Trainer",
    "checkpoint_path",
    "read_history",
    "run_dir",
    "train",
    "write_history",
]
