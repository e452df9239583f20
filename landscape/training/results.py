"""The results of a run folder: final accuracies per restart and their mean ± std.

Two numbers per restart, one Adam step apart:

* **final weights** ``θ_T`` (``T = steps``; the table ``table``): the row
  :meth:`~landscape.training.Trainer.evaluate` measures after the last update, the weights
  the checkpoints hold and the analyses use;
* **the script's number** ``θ_{T-1}`` (``table_last_update``): the forward pass of the last
  update, which the Colored MNIST script (alexrame/fishr) prints and reports as "final".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from landscape.io import SavedResult
from landscape.names import TRAIN_COLUMN, algorithm_name, column_title, mean_spread


@dataclass
class RunResults(SavedResult):
    """Final accuracies of a run folder and their mean ± std over restarts (percent).

    Attributes:
        config: the :class:`~landscape.training.TrainConfig` as a dict.
        train_domains, test_domains: domain names.
        seeds: ``{algorithm: [seed of restart 0, 1, ...]}``.
        final: ``{algorithm: {column: [value per restart]}}`` with the columns of the final
            history row (``acc/<domain>``, ``loss/<domain>``, penalties, ...).
        table: ``{algorithm: {column title: [mean, std]}}`` in percent at the final weights;
            ``"Train acc."`` is the mean over the training domains, then one column per test
            domain. The std is the population std over restarts (``ddof=0``, as the Colored
            MNIST script); it is 0 for a single restart, which :meth:`markdown` does not
            print as a spread.
        out_dir: the run folder.
        last_update: as ``final``, for the row of the last update (the script's number).
        table_last_update: as ``table``, for ``last_update``.
    """

    config: dict
    train_domains: list
    test_domains: list
    seeds: dict
    final: dict
    table: dict
    out_dir: str = ""
    last_update: dict = field(default_factory=dict)
    table_last_update: dict = field(default_factory=dict)

    @classmethod
    def from_final(
        cls,
        config,
        train_domains: Sequence[str],
        test_domains: Sequence[str],
        final_rows: Mapping[str, Sequence[dict[str, float]]],
        seeds: Mapping[str, Sequence[int]],
        out_dir: str = "",
        last_update_rows: Mapping[str, Sequence[dict[str, float]]] | None = None,
    ) -> RunResults:
        """Aggregate the final rows ``{algorithm: [row of restart 0, 1, ...]}`` of a run with
        ``config`` (a :class:`~landscape.training.TrainConfig` or its dict), and the rows of
        the last updates (the script's numbers) when given."""
        final, table = _aggregate(final_rows, train_domains, test_domains)
        last, table_last = _aggregate(last_update_rows or {}, train_domains, test_domains)
        return cls(
            config=config if isinstance(config, dict) else config.to_dict(),
            train_domains=list(train_domains),
            test_domains=list(test_domains),
            seeds={a: [int(s) for s in v] for a, v in seeds.items()},
            final=final,
            table=table,
            out_dir=str(out_dir),
            last_update=last,
            table_last_update=table_last,
        )

    def restarts(self) -> dict[str, int]:
        """``{algorithm: number of restarts}``."""
        return {a: len(v) for a, v in self.seeds.items()}

    def markdown(self, digits: int = 1) -> str:
        """The tables in Markdown, ``mean ± std`` in percent (``mean`` alone for an algorithm
        with a single restart: there is no spread), one row per algorithm: the final
        weights, then (when recorded) the script's number, each under a line saying which."""
        if not self.table:
            return "(no finished run)\n"
        steps = int(self.config["steps"])
        text = f"Final weights (after {steps} updates):\n\n"
        text += self._markdown_table(self.table, digits)
        if self.table_last_update:
            text += (
                f"\nThe script's number (the forward pass of the last update, step {steps - 1}, "
                "one Adam step before the final weights):\n\n"
            )
            text += self._markdown_table(self.table_last_update, digits)
        return text

    def _markdown_table(self, table: dict, digits: int) -> str:
        titles = list(next(iter(table.values())))
        restarts = self.restarts()
        lines = [
            "| Method | " + " | ".join(titles) + " | Restarts |",
            "|---|" + "---|" * len(titles) + "---|",
        ]
        for algo, cols in table.items():
            n = restarts.get(algo, 0)
            cells = [mean_spread(m, s, n, digits) for m, s in (cols[t] for t in titles)]
            lines.append(f"| {algorithm_name(algo)} | " + " | ".join(cells) + f" | {n} |")
        return "\n".join(lines) + "\n"


def _aggregate(rows_by_algo, train_domains, test_domains) -> tuple[dict, dict]:
    """``(per-restart columns, table)`` of ``{algorithm: [row per restart]}`` (see
    :class:`RunResults`)."""
    final: dict[str, dict[str, list[float]]] = {}
    table: dict[str, dict[str, list[float]]] = {}
    for algo, rows in rows_by_algo.items():
        final[algo] = {c: [float(r.get(c, math.nan)) for r in rows] for c in rows[0]}
        train_acc = np.mean([[r[f"acc/{d}"] for d in train_domains] for r in rows], axis=1)
        columns = {TRAIN_COLUMN: train_acc}
        for d in test_domains:
            columns[column_title(d)] = np.array([r[f"acc/{d}"] for r in rows])
        table[algo] = {
            title: [float(100 * v.mean()), float(100 * v.std())] for title, v in columns.items()
        }
    return final, table
