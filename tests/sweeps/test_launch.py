"""Launching a sweep: the local launcher with a fake training command, resuming, the
`landscape sweep` command, and the submitit path with a fake submitit module."""

from __future__ import annotations

import json
import shlex
import sys
import time
import types

import pytest

from landscape.cli import main
from landscape.sweeps import launch
from landscape.sweeps.jobs import JobState, make_jobs
from landscape.sweeps.launch import LocalLauncher, run_slurm_job, threads_per_job, train_command
from landscape.sweeps.selection import load_records

# A stand-in for `landscape train`: writes one DomainBed record and `done`; IRM fails (unless
# the file `heal` exists next to its folder); VREx sleeps a minute.
FAKE = r"""
import json, os, sys, time
folder, args = sys.argv[1], json.loads(sys.argv[2])
print("training", args["algorithm"], flush=True)
if args["algorithm"] == "VREx":
    time.sleep(60)
if args["algorithm"] == "IRM" and not os.path.exists(os.path.join(folder, "..", "heal")):
    print("Traceback ...\nRuntimeError: failing on purpose", file=sys.stderr)
    sys.exit(3)
rec = {"step": 0, "args": args, "threads": os.environ.get("OMP_NUM_THREADS")}
for e in range(3):
    rec[f"env{e}_in_acc"], rec[f"env{e}_out_acc"] = 0.5 + e / 10, 0.6
with open(os.path.join(folder, "results.jsonl"), "a") as f:
    f.write(json.dumps(rec) + "\n")
open(os.path.join(folder, "done"), "w").write("done")
"""


def fake_command(job):
    return [sys.executable, "-c", FAKE, str(job.folder), json.dumps(job.args)]


def debug_jobs(root, algorithms=("ERM", "IRM")):
    return make_jobs(["Debug28"], list(algorithms), root, test_envs=[0], trials=1, steps=3)


def test_local_launcher_runs_every_job_logs_it_and_reports_the_failure(tmp_path):
    lines = []
    jobs = debug_jobs(tmp_path)
    summary = LocalLauncher(parallel=2, threads=1, command=fake_command, echo=lines.append).launch(
        jobs
    )
    erm, irm = jobs
    assert summary.done == [erm] and [o.job for o in summary.failed] == [irm]
    assert summary.skipped == []
    (failure,) = summary.failed
    assert failure.returncode == 3
    assert failure.reason == "exit status 3: RuntimeError: failing on purpose"
    assert summary.line() == "2 jobs: 1 done, 1 failed, 0 skipped (already done)"
    assert len(lines) == 2 and sum("FAILED" in line for line in lines) == 1
    failed_line = next(line for line in lines if "FAILED" in line)
    assert irm.folder.name in failed_line and str(irm.folder / "err.txt") in failed_line
    assert (erm.folder / "out.txt").read_text() == "training ERM\n"
    assert "failing on purpose" in (irm.folder / "err.txt").read_text()
    assert (erm.folder / "done").is_file() and not (irm.folder / "done").exists()
    assert erm.state is JobState.DONE and irm.state is JobState.INCOMPLETE
    (rec,) = load_records(tmp_path).records
    assert rec["threads"] == "1" and rec["args"]["algorithm"] == "ERM"


def test_a_second_launch_skips_done_jobs_and_reruns_incomplete_ones(tmp_path):
    jobs = debug_jobs(tmp_path)
    LocalLauncher(threads=1, command=fake_command, echo=lambda _: None).launch(jobs)
    (tmp_path / "heal").write_text("")
    lines = []
    summary = LocalLauncher(threads=1, command=fake_command, echo=lines.append).launch(jobs)
    assert summary.skipped == [jobs[0]] and summary.done == [jobs[1]] and not summary.failed
    assert len(lines) == 1 and "IRM" in lines[0]
    # the log is appended: the failed try and the retry
    assert (jobs[1].folder / "out.txt").read_text() == "training IRM\ntraining IRM\n"
    assert (jobs[0].folder / "out.txt").read_text() == "training ERM\n"  # ran once
    assert len(load_records(tmp_path).records) == 2


def test_exit_zero_without_done_is_a_failure(tmp_path):
    (job,) = debug_jobs(tmp_path, ["ERM"])
    command = lambda job: [sys.executable, "-c", "print('hi')"]  # noqa: E731
    summary = LocalLauncher(command=command, echo=lambda _: None).launch([job])
    assert summary.failed[0].reason == "exit status 0 but no 'done' file"


def test_a_command_that_cannot_start_fails_alone(tmp_path):
    jobs = debug_jobs(tmp_path)
    bad = {jobs[1].folder}

    def command(job):
        return ["/nonexistent/python"] if job.folder in bad else fake_command(job)

    summary = LocalLauncher(parallel=2, command=command, echo=lambda _: None).launch(jobs)
    assert summary.done == [jobs[0]] and summary.failed[0].reason.startswith("cannot start:")


def test_threads_are_split_between_the_parallel_jobs(monkeypatch):
    import landscape.device

    monkeypatch.setattr(landscape.device, "available_cores", lambda: 8)
    assert threads_per_job(1) == 8 and threads_per_job(2) == 4 and threads_per_job(3) == 2
    assert threads_per_job(16) == 1 and threads_per_job(2, threads=3) == 3
    assert LocalLauncher(parallel=4).threads == 2


def test_interrupt_stops_the_running_jobs(tmp_path):
    """Ctrl-C while a job runs: it is terminated (it resumes next time), the error goes on."""
    jobs = debug_jobs(tmp_path, ["ERM", "VREx"])

    def echo(line):
        raise KeyboardInterrupt  # at the first status line (ERM's), VREx still sleeps

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        LocalLauncher(parallel=2, command=fake_command, echo=echo).launch(jobs)
    assert time.perf_counter() - start < 30  # not the minute VREx sleeps
    assert jobs[0].state is JobState.DONE and jobs[1].state is JobState.INCOMPLETE


def test_train_command_passes_every_argument(tmp_path):
    (job,) = make_jobs(
        ["PACS"], ["vrex"], tmp_path, test_envs=[2], trials=1, steps=50, checkpoint_freq=10,
        data_dir="/data dir", holdout_fraction=0.1, hparams='{"lr": 0.1}',
    )  # fmt: skip
    command = train_command(job)
    assert command[:4] == [sys.executable, "-m", "landscape", "train"]
    assert shlex.join(command[4:]) == (
        f"--dataset PACS --algorithm VREx --test-envs 2 --hparams-seed 0 --trial-seed 0 "
        f"--seed {job.args['seed']} --steps 50 --out {job.folder} --data-dir '/data dir' "
        "--holdout-fraction 0.1 --checkpoint-freq 10 --hparams '{\"lr\": 0.1}'"
    )
    (job,) = make_jobs(["PACS"], ["ERM"], tmp_path, test_envs=[0], trials=1)
    assert "--steps" not in train_command(job) and "--data-dir" not in train_command(job)


SWEEP = ["sweep", "--dataset", "Debug28", "--algorithm", "ERM", "IRM", "--test-envs", "0"]


def test_sweep_command_launches_reports_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launch, "train_command", fake_command)
    argv = [*SWEEP, "--trials", "2", "--steps", "3", "--out", str(tmp_path), "--jobs", "2"]
    assert main([*argv, "--skip-confirmation"]) == 1  # IRM fails
    out = capsys.readouterr().out
    assert "4 jobs: 0 done, 0 incomplete, 4 not launched" in out
    assert "4 jobs: 2 done, 2 failed, 0 skipped (already done)" in out
    assert "landscape collect" in out
    (tmp_path / "heal").write_text("")
    assert main([*argv, "--skip-confirmation"]) == 0
    out = capsys.readouterr().out
    assert "4 jobs: 2 done, 2 incomplete, 0 not launched" in out
    assert "4 jobs: 2 done, 0 failed, 2 skipped (already done)" in out
    assert main([*argv, "--skip-confirmation"]) == 0
    assert "nothing to launch" in capsys.readouterr().out
    assert main(["collect", str(tmp_path)]) == 0
    # two trials with equal accuracies: a measured spread of 0
    assert "| ERM | 50.0 ± 0.0 | X | X | X |" in capsys.readouterr().out


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, capsys):
    assert main([*SWEEP, "--trials", "1", "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 jobs: 0 done, 0 incomplete, 2 not launched"
    assert all(line.startswith("not launched: ") for line in lines[1:]) and len(lines) == 3
    assert "-m landscape train --dataset Debug28 --algorithm IRM --test-envs 0" in lines[2]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_confirmation_no_launches_nothing_and_no_stdin_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main([*SWEEP, "--trials", "1", "--out", str(tmp_path)]) == 0
    assert "nothing launched" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())

    def no_stdin(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_stdin)
    with pytest.raises(SystemExit) as info:
        main([*SWEEP, "--trials", "1", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "pass --skip-confirmation" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--test-envs", "all", "1"], "'all' or indices, not both"),
        (["--test-envs", "5"], "Debug28 has no environment 5"),
        (["--algorithm", "MMD"], "unknown algorithm 'MMD'"),
        (["--hparams", "nope"], "--hparams is not JSON"),
    ],
)
def test_sweep_bad_input_is_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main([*SWEEP, *argv, "--out", str(tmp_path), "--dry-run"])
    assert info.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert message in line


class FakeExecutor:
    """What submit_slurm uses of submitit.AutoExecutor, recording the calls."""

    instances: list[FakeExecutor] = []

    def __init__(self, folder):
        self.folder, self.parameters, self.submitted, self.batched = folder, {}, [], False
        FakeExecutor.instances.append(self)

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def batch(self):
        import contextlib

        self.batched = True
        return contextlib.nullcontext()

    def submit(self, fn, *args):
        self.submitted.append((fn, args))
        return types.SimpleNamespace(job_id=f"123_{len(self.submitted) - 1}")


def test_submitit_launcher_with_a_fake_module(tmp_path, monkeypatch, capsys):
    fake = types.SimpleNamespace(AutoExecutor=FakeExecutor)
    monkeypatch.setitem(sys.modules, "submitit", fake)
    FakeExecutor.instances.clear()
    argv = [*SWEEP, "--trials", "1", "--out", str(tmp_path), "--launcher", "submitit"]
    argv += ["--slurm-partition", "gpu", "--slurm-time", "90", "--slurm-cpus", "4"]
    assert main([*argv, "--skip-confirmation"]) == 0
    (executor,) = FakeExecutor.instances
    assert executor.folder == str(tmp_path / "slurm" / "%j") and executor.batched
    assert executor.parameters == {
        "name": "landscape-sweep",
        "slurm_partition": "gpu",
        "timeout_min": 90,
        "cpus_per_task": 4,
    }
    jobs = make_jobs(["Debug28"], ["ERM", "IRM"], tmp_path, test_envs=[0], trials=1)
    assert [args for _, args in executor.submitted] == [
        (train_command(job), str(job.folder), 4) for job in jobs
    ]
    assert all(fn is run_slurm_job for fn, _ in executor.submitted)
    assert "submitted 2 jobs to Slurm (ids 123_0 .. 123_1)" in capsys.readouterr().out


def test_submitit_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(SystemExit) as info:
        main([*SWEEP, "--out", str(tmp_path), "--launcher", "submitit", "--skip-confirmation"])
    assert info.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "pip install submitit" in line
    assert not any(tmp_path.iterdir())


def test_a_slurm_task_raises_when_its_job_fails(tmp_path):
    ok = [sys.executable, "-c", "print('fine')"]
    assert run_slurm_job(ok, str(tmp_path / "a")) == 0
    assert (tmp_path / "a" / "out.txt").read_text() == "fine\n"
    with pytest.raises(RuntimeError, match="exited with status 4"):
        run_slurm_job([sys.executable, "-c", "raise SystemExit(4)"], str(tmp_path / "b"))
