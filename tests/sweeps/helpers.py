"""Hand-made DomainBed records and run folders for the sweep tests."""

from __future__ import annotations

import json
from pathlib import Path

from landscape.sweeps.jobs import job_hash, train_args


def record(
    dataset: str,
    algorithm: str,
    test_envs: list[int],
    hparams_seed: int,
    trial_seed: int,
    step: int,
    accs: dict[int, tuple[float, float]],
) -> dict:
    """One record with every key DomainBed's ``train.py`` writes; ``accs = {env: (in, out)}``."""
    args = train_args(dataset, algorithm, test_envs, hparams_seed, trial_seed, data_dir="/data")
    args.update(
        output_dir="/somewhere",
        steps=None,
        checkpoint_freq=None,
        uda_holdout_fraction=0,
        skip_model_save=False,
        save_model_every_checkpoint=False,
    )
    rec = {"step": step, "epoch": step / 10, "loss": 0.5, "mem_gb": 0.1, "step_time": 0.01}
    for env, (acc_in, acc_out) in accs.items():
        rec[f"env{env}_in_acc"] = acc_in
        rec[f"env{env}_out_acc"] = acc_out
    rec["hparams"] = {"lr": 1e-3, "batch_size": 64}
    rec["args"] = args
    return rec


def run_records(dataset, algorithm, test_env, hparams_seed, trial_seed, rows) -> list[dict]:
    """Records of one run: ``rows = [(step, {env: (in, out)}), ...]`` (kept in this order)."""
    return [
        record(dataset, algorithm, [test_env], hparams_seed, trial_seed, step, accs)
        for step, accs in rows
    ]


def write_run(root: Path, records: list[dict], done: bool = True, name: str | None = None) -> Path:
    """A DomainBed run folder ``root/<md5 of args>`` with results.jsonl (+ done, out/err.txt)."""
    args = {k: v for k, v in records[0]["args"].items() if k != "output_dir"}
    folder = root / (name or job_hash(args))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "out.txt").write_text("Args:\n")
    (folder / "err.txt").write_text("")
    if done:
        (folder / "done").write_text("done")
    return folder
