"""`pepr-agent slurm`: a sweep as a Slurm job array of shards, then a job that merges them.

Task I of N runs `pepr-agent run RUN-FLAGS --shard I/N` into its own part file beside the
database (RUNS.part-I-of-N.duckdb); the merge job starts after the array, however it ended,
and merges the parts that exist into RUNS. Re-submitting submits only the tasks whose jobs are
not all `ok` yet (in RUNS or the task's part file), and a merge.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import site
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from agent.cli import positive
from pepr.claims import squeue
from pepr.errors import PeprError

SLURM_FLAGS = ("--tasks", "--partition", "--gres", "--time", "--cpus-per-task", "--submit")

EPILOG = """\
example: 16 tasks with one GPU each, then a merge into runs.duckdb
  pepr-agent slurm --models-file models.txt --datasets dermamnist --regimes pretrained \\
      --tasks 16 --gres gpu:1 --cpus-per-task 8 --time 12:00:00 --db runs.duckdb --submit

Without --submit it writes the scripts (into RUNS.slurm/) and prints how to submit them.
Re-running the same command after some tasks failed submits only those tasks, and a merge."""


def add_parser(commands, run: argparse.ArgumentParser) -> None:
    """The `slurm` subcommand: every flag of `run`, plus the job array's."""
    slurm = commands.add_parser(
        "slurm", parents=[run], conflict_handler="resolve", allow_abbrev=False,
        help="run a sweep as a Slurm job array, then merge its parts",
        usage="pepr-agent slurm RUN-FLAGS --tasks N --db RUNS.duckdb [--partition P] "
              "[--gres gpu:1] [--time T] [--cpus-per-task C] [--submit]",
        description="Write (and with --submit, submit) an sbatch job array of N tasks, task I "
                    "running `pepr-agent run RUN-FLAGS --shard I/N` into RUNS.part-I-of-N.duckdb, "
                    "and a job that merges the parts into RUNS after the array.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = slurm.add_argument_group("the Slurm job array")
    group.add_argument("--tasks", type=positive(int), required=True, metavar="N",
                       help="array tasks; task I trains shard I/N of the plan")
    group.add_argument("--partition", type=sbatch_word, metavar="P", help="sbatch --partition")
    group.add_argument("--gres", type=sbatch_word, metavar="G", help="sbatch --gres per task, "
                       "e.g. gpu:1 (without it, tasks use no GPU)")
    group.add_argument("--time", type=sbatch_time, metavar="T",
                       help="sbatch --time, e.g. 12:00:00 or 2-00:00:00")
    group.add_argument("--cpus-per-task", type=positive(int), metavar="C",
                       help="sbatch --cpus-per-task")
    group.add_argument("--submit", action="store_true",
                       help="submit the array and the merge job; print their job ids")


def sbatch_word(text: str) -> str:
    """An argparse type: a value written into an `#SBATCH` line, so one word of plain
    characters (a newline would add a directive of its own)."""
    if not re.fullmatch(r"[\w.:,=+/@%-]+", text):
        raise argparse.ArgumentTypeError(f"expected one word of letters, digits and .:,=+/@%_-, got {text!r}")
    return text


def sbatch_time(text: str) -> str:
    """An argparse type: a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]), with
    minutes and seconds under 60 and hours after days under 24."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)((?::\d{1,2}){0,2})", text)
    if match:
        first, *rest = [int(match[2]), *map(int, match[3].split(":")[1:])]
        if all(value < 60 for value in rest) and not (match[1] and first > 23):
            return text
    if text.lower() in ("unlimited", "infinite"):
        return text
    raise argparse.ArgumentTypeError(f"expected a Slurm time such as 90, 12:00:00 or 2-00:00:00, got {text!r}")


def run_flags(argv: list[str]) -> list[str]:
    """The `run` flags of a `slurm` command line, verbatim: without the array's flags and --db."""
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in SLURM_FLAGS:
        own.add_argument(flag, action="store_true" if flag == "--submit" else "store")
    own.add_argument("--db")
    return own.parse_known_args(argv)[1]


def part_path(db: Path, index: int, tasks: int) -> Path:
    """Task `index`'s part file, beside the database."""
    return db.with_name(f"{db.stem}.part-{index}-of-{tasks}{db.suffix}")


def ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5', as sbatch --array takes it."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def _python_path_line() -> str:
    """Where pepr is imported from, exported for the jobs unless it is installed site-wide."""
    root = Path(__file__).resolve().parents[1]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root in installed:
        return ""
    return f'export PYTHONPATH={shlex.quote(str(root))}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'


def _quoted(text: str) -> str:
    """Text to put between double quotes in bash."""
    return "".join("\\" + c if c in '"$`\\' else c for c in text)


def _directives(name: str, output: Path, args, **extra) -> str:
    """`#SBATCH` lines; stdout (a task's JSON lines) to `output`, stderr (progress bars,
    messages) beside it in `.err`: one file mixed them, and the JSON lines did not parse."""
    lines = [f"--job-name={name}", f"--chdir={os.getcwd()}", f"--output={output}",
             f"--error={output.with_suffix('.err')}",
             *(f"--{key}={value}" for key, value in extra.items())]
    for flag in ("partition", "time"):
        if getattr(args, flag):
            lines.append(f"--{flag}={getattr(args, flag)}")
    return "".join(f"#SBATCH {shlex.quote(line)}\n" for line in lines)


def scripts(args, flags: list[str], db: Path, plan_digest: str) -> tuple[str, str]:
    """The text of the array's sbatch script and of the merge job's; each task refuses to run
    a plan other than the one of `plan_digest` (a models file edited after submission)."""
    tasks = args.tasks
    # -P: the submit folder is not on the module path, so a user's own `agent/` or `pepr/` there
    # cannot stand in for pepr's (Python 3.11+).
    python = shlex.quote(os.path.abspath(sys.executable)) + (" -P" if sys.version_info >= (3, 11) else "")
    logs = db.with_name(db.stem + ".slurm") / "logs"
    name = f"pepr-{db.stem}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head, tail = str(part_path(db, 0, tasks)).rsplit(".part-0-", 1)
    part = f'"{_quoted(head)}.part-$SLURM_ARRAY_TASK_ID-{_quoted(tail)}"'
    extra = {"array": f"0-{tasks - 1}"}
    if args.gres:
        extra["gres"] = args.gres
    threads = ""
    if args.cpus_per_task:
        extra["cpus-per-task"] = args.cpus_per_task
        threads = f"export OMP_NUM_THREADS={args.cpus_per_task}  # torch: one thread per CPU given\n"
    gpu = ("# Slurm puts this task's own GPU(s) in CUDA_VISIBLE_DEVICES: the agent trains on\n"
           "# and measures only those.\n" if args.gres else
           "# No --gres: this task has no GPU of its own, so it uses none.\n"
           "export CUDA_VISIBLE_DEVICES=\n")
    command = " \\\n    ".join(
        [f"exec {python} -m agent run", shlex.join(flags),
         f'--shard "$SLURM_ARRAY_TASK_ID/{tasks}" --plan-digest {plan_digest} --done-in {shlex.quote(str(db))} --db {part}'])
    array = (
        "#!/bin/bash\n"
        f"# A pepr sweep as a Slurm job array, written by `pepr-agent slurm` on {stamp}.\n"
        f"# Task I of {tasks} trains shard I/{tasks} of the plan into its own part file,\n"
        f"# {part_path(db, 0, tasks).name.replace('part-0-', 'part-I-')}; merge.sbatch merges "
        f"the parts into {db.name}.\n"
        + _directives(name, logs / "task-%a-job-%A.out", args, **extra)
        + "set -euo pipefail\n" + _python_path_line() + threads + gpu + command + "\n"
    )
    parts = " ".join(shlex.quote(str(part_path(db, i, tasks))) for i in range(tasks))
    merge = (
        "#!/bin/bash\n"
        f"# Merges the part files of the array into {db.name}; runs after the array, however it "
        "ended.\n"
        + _directives(f"{name}-merge", logs / "merge-job-%j.out", args, **{"cpus-per-task": 1})
        + "set -euo pipefail\n" + _python_path_line()
        + "parts=()\n"
        + f"for part in {parts}; do\n"
        + '  if [ -e "$part" ]; then parts+=("$part"); fi\n'
        + "done\n"
        + f'if [ ${{#parts[@]}} -eq 0 ]; then echo "no part file: no task recorded a run (see {_quoted(str(logs))})" >&2; exit 1; fi\n'
        + f'exec {python} -m pepr merge "${{parts[@]}}" --into {shlex.quote(str(db))}\n'
    )
    return array, merge


def unmerged_parts(db: Path, tasks: int, merged: set[str]) -> list[Path]:
    """The part files of a plan split over another number of tasks that hold ok runs the
    database lacks (`merged`: its ok job keys): tasks of this plan do not read them, so they
    would train those jobs again."""
    from pepr.store import RunStore

    others = sorted(db.parent.glob(f"{glob.escape(db.stem)}.part-*-of-*{glob.escape(db.suffix)}"))
    pattern = re.compile(rf"{re.escape(db.stem)}\.part-\d+-of-(\d+){re.escape(db.suffix)}")
    return [part for part in others if (match := pattern.fullmatch(part.name)) and int(match[1]) != tasks
            and RunStore(part).ok_job_keys() - merged]


def unfinished(jobs, db: Path, tasks: int, merged: set[str]) -> tuple[list[int], bool]:
    """The tasks with a job not `ok` in the database (`merged`: its ok job keys) nor in their
    part file, and whether the database lacks a job that a part has `ok` (so a merge alone
    would add it)."""
    from agent.plan import shard
    from pepr.store import RunStore

    todo, unmerged = [], False
    for index in range(tasks):
        mine = shard(jobs, index, tasks)
        in_part = RunStore(part_path(db, index, tasks)).ok_job_keys()
        unmerged |= any(job.done_in(in_part) and not job.done_in(merged) for job in mine)
        if any(not job.done_in(merged) and not job.done_in(in_part) for job in mine):
            todo.append(index)
    return todo, unmerged


class SubmitError(PeprError):
    """sbatch refused or is missing."""

    exit_code = 1


def queued(scripts: Sequence[Path]) -> list[str]:
    """The ids of this user's jobs in the Slurm queue that run one of `scripts` (none where
    squeue cannot say)."""
    listed = squeue("--me", "--format=%i %o", timeout=60)
    wanted = {str(script) for script in scripts}
    rows = [line.split(" ", 1) for line in listed.stdout.splitlines()] if listed and listed.returncode == 0 else []
    return [row[0] for row in rows if len(row) == 2 and row[1].strip() in wanted]


def _sbatch(*argv: str) -> str:
    """Submit; returns the job id."""
    try:
        done = subprocess.run(["sbatch", "--parsable", *argv], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SubmitError(f"sbatch: {error}") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise SubmitError(message if message.startswith("sbatch:") else f"sbatch: {message}")
    return done.stdout.strip().split(";")[0]


def command(args, argv: list[str]) -> int:
    """`pepr-agent slurm`: write the scripts, and submit them with --submit."""
    from agent.cli import check_local_data, checked_db, parse, plan_jobs
    from agent.plan import check_protocol, digest

    flags = run_flags(argv[argv.index("slurm") + 1:])  # flags before the subcommand are not run's
    run_args = parse(["run", *flags])  # with the --config file's values
    for flag in ("shard", "done_in", "dry_run"):
        if getattr(run_args, flag):
            raise PeprError(f"--{flag.replace('_', '-')}: not for pepr-agent slurm (it shards the plan "
                            "over --tasks, each task skipping the jobs ok in --db)")
    gpu_asked = bool(args.gres) and "gpu" in args.gres
    if run_args.device.startswith("cuda") and not gpu_asked:
        raise PeprError(f"--device {run_args.device}: the tasks get no GPU without --gres (e.g. --gres gpu:1)")
    if gpu_asked and run_args.device == "auto":  # where CUDA fails, auto would train on the CPU, unsaid
        flags = [*flags, "--device", "cuda"]
    jobs = plan_jobs(run_args)
    if args.tasks > len(jobs):
        raise PeprError(f"--tasks {args.tasks}: more than the {len(jobs)} job(s) of this plan; "
                        "the tasks beyond them would have nothing to do")
    db = Path(args.db).absolute()
    store = checked_db(db)
    check_protocol(jobs, store)
    check_local_data(jobs, run_args, [store])  # refused here, not in every task's log
    merged = store.ok_job_keys()  # read once, for both checks
    stray = unmerged_parts(db, args.tasks, merged)
    if stray:
        raise PeprError(f"{stray[0]}: ok runs not merged into {db.name}, from tasks of another --tasks, which "
                        f"these tasks would train again: merge the parts first (pepr merge "
                        f"{shlex.quote(str(db.with_name(db.stem + '.part-')))}*{db.suffix} --into {shlex.quote(str(db))})")
    folder = db.with_name(db.stem + ".slurm")
    try:
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        array_path, merge_path = folder / "array.sbatch", folder / "merge.sbatch"
        for path, text in zip((array_path, merge_path), scripts(args, flags, db, digest(jobs))):
            path.write_text(text)
    except OSError as error:
        raise PeprError(f"--db: {args.db}: cannot write the scripts: {error.strerror}") from None
    todo, unmerged = unfinished(jobs, db, args.tasks, merged)
    print(f"wrote {array_path} ({args.tasks} task(s), {len(jobs)} job(s)) and {merge_path}")
    if not todo and not unmerged:
        print(f"nothing to submit: every job is ok in {db}")
        return 0
    array = [f"--array={ranges(todo)}"] if todo != list(range(args.tasks)) else []
    if not args.submit:
        print("submit them with:")
        if todo:
            print(f"  jobid=$(sbatch --parsable {shlex.join([*array, str(array_path)])})")
            print(f"  sbatch --dependency=afterany:${{jobid%%;*}} {shlex.quote(str(merge_path))}")
        else:
            print(f"  sbatch {shlex.quote(str(merge_path))}   # every task is done; merge only")
        return 0
    waiting = queued((array_path, merge_path))
    if waiting:  # its tasks would find their jobs held, and wait in the queue to do nothing
        raise SubmitError(f"job(s) {', '.join(waiting)} of this sweep are still in the queue; wait for them "
                          "(squeue --me), or scancel them, then submit again")
    if todo:
        array_id = _sbatch(*array, str(array_path))
        try:
            merge_id = _sbatch(f"--dependency=afterany:{array_id}", str(merge_path))
        except SubmitError as refused:
            raise SubmitError(f"submitted job array {array_id} (tasks {ranges(todo)}), but the merge job was "
                              f"refused ({refused}): once it can run, sbatch --dependency=afterany:{array_id} "
                              f"{shlex.quote(str(merge_path))}") from None
        print(f"submitted job array {array_id} (tasks {ranges(todo)}) and merge job {merge_id}, "
              "which runs after it")
    else:
        merge_id = _sbatch(str(merge_path))
        print(f"every task is done; submitted merge job {merge_id}")
    return 0
