"""`pepr-agent run ...`: plan a sweep of timm models, train and measure each, record to DuckDB."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from pepr.cli_frame import Parser, label, run_command
from pepr.errors import PeprError
from pepr.schema import INT32_MAX, now

AMP_MODES = ("off", "fp16", "bf16")

DESCRIPTION = """\
Train timm image classifiers and measure what each run costs: energy (CPU, GPU, RAM, with
CodeCarbon), CO2, time, GPU and host memory, parameters and training data. Every run goes to
a pepr DuckDB file that the dashboard reads. Start it and leave it: re-running the same
command skips the jobs already done, a job that fails is recorded and the sweep goes on, and
Ctrl-C or SIGTERM marks the current job 'interrupted'.

The plan is every combination of models x datasets x regimes x fractions x seeds."""

EPILOG = """\
examples:
  # a first run anywhere, no network needed: two tiny models on scikit-learn's digits
  pepr-agent run --models test_resnet,test_efficientnet --datasets digits --epochs 3

  # the paper's protocol on MedMNIST Derma: 10 epochs, Adam 5e-4, batch 32, 256 px, fine-tuned
  pepr-agent run --models-file models.txt --datasets dermamnist --regimes pretrained \\
      --fractions 1,0.1 --image-size 256 --device cuda --db results/derma.duckdb

  # 20 models of 1M-25M parameters drawn from timm (seeded), shown but not run
  pepr-agent run --param-range 1e6:25e6 --sample 20 --regimes pretrained --dry-run

  # 4 GPUs: one process per GPU, one file each, then combine
  for i in 0 1 2 3; do pepr-agent run ... --shard $i/4 --device cuda:$i --db part$i.duckdb & done
  pepr merge part*.duckdb --into all.duckdb
  # or a Slurm job array of 16 tasks, one GPU each, merged into runs.duckdb after it
  pepr-agent slurm ... --tasks 16 --gres gpu:1 --db runs.duckdb --submit

datasets: 'digits' (bundled, offline), a MedMNIST 2D name (e.g. dermamnist, pneumoniamnist;
downloaded into --data-dir at the smallest published size >= --image-size), a .npz file in
MedMNIST's layout (train_images, train_labels, val_..., test_...), or an image folder laid out
as root/{train,val,test}/<class>/<image>.

exit status: 0 all jobs ok (or held by another live agent), 1 some job failed, a write the
disk refused or an unexpected error (--debug: traceback),
2 bad input (one line, nothing recorded), 130/143 stopped by SIGINT/SIGTERM (the current job
is recorded 'interrupted'), 141 the output's reader went away.
Output: one JSON line per finished job on stdout (or --log), progress bars on stderr."""



def _list(kind=str, what="a comma-separated list"):
    def parse(text: str):
        try:
            values = [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values
    return parse


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= INT32_MAX:
        raise ValueError(text)
    return value


def _regimes(text: str) -> list[bool]:
    values = _list(str, "scratch and/or pretrained")(text)
    bad = [v for v in values if v not in ("scratch", "pretrained")]
    if bad:
        raise argparse.ArgumentTypeError(f"expected scratch and/or pretrained, got {text!r}")
    return [v == "pretrained" for v in dict.fromkeys(values)]


def _fractions(text: str) -> list[float]:
    values = _list(float, "comma-separated fractions in (0, 1]")(text)
    if not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1], got {text!r}")
    return values


def _param_range(text: str) -> tuple[float, float]:
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*:\s*([0-9.eE+]+)\s*", text)
    try:
        low, high = float(match[1]), float(match[2])
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, e.g. 1e6:25e6, got {text!r}")
    if not (0 <= low <= high and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"expected finite 0 <= MIN <= MAX, got {text!r}")
    return low, high


MAX_IMAGE_SIZE = 4096  # px a side; every image of a dataset is held in memory at this size


def positive(kind, largest: int = INT32_MAX):
    """A finite number > 0; for `int`, a whole number up to `largest` (by default what fits
    the database's INTEGER)."""
    whole = kind is int

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "a whole number" if whole else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= (largest if whole else math.inf)):
            bound = f"a whole number from 1 to {largest}" if whole else "a finite number > 0"
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        return value
    return parse


def parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The `pepr-agent` parser and its `run` subcommand's parser."""
    top = Parser(prog="pepr-agent", description=DESCRIPTION,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,bench,slurm}",
                                  parser_class=Parser)
    run = commands.add_parser(
        "run", help="plan, train and measure a sweep", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = run.add_argument_group("what to train")
    what.add_argument("--models", type=_list(), action="extend", default=[], metavar="A,B",
                      help="timm model names, comma-separated (repeatable)")
    what.add_argument("--models-file", metavar="FILE", help="a text file of timm names, one a line")
    what.add_argument("--param-range", type=_param_range, metavar="MIN:MAX",
                      help="draw models from timm.list_models() with MIN..MAX trainable "
                           "parameters (as built with timm's default head); needs --sample")
    what.add_argument("--sample", type=positive(int), metavar="K", help="how many models to draw")
    what.add_argument("--sample-seed", type=int, default=0, metavar="S",
                      help="seed of the draw (default 0)")
    what.add_argument("--datasets", type=_list(label), default=["digits"], metavar="A,B",
                      help="digits, MedMNIST names, .npz files, image folders (default digits)")
    what.add_argument("--data-dir", default=str(Path.home() / ".cache" / "pepr" / "medmnist"),
                      metavar="DIR", help="MedMNIST download cache (default %(default)s)")
    what.add_argument("--regimes", type=_regimes, default=[False], metavar="R",
                      help="scratch and/or pretrained (ImageNet weights from timm), "
                           "comma-separated (default scratch)")
    what.add_argument("--fractions", type=_fractions, default=[1.0], metavar="F",
                      help="training-data fractions, e.g. 1,0.1 (the paper's 10%% regime); "
                           "the subset is the same for every model (default 1)")
    what.add_argument("--seeds", type=_list(_seed, f"comma-separated seeds from 0 to {INT32_MAX}"),
                      default=[0], metavar="S",
                      help="seeds, e.g. 0,1,2 (default 0)")
    what.add_argument("--experiment", type=label, metavar="LABEL",
                      help="experiment label (normalisation group) for every job; default "
                           "DATASET[_pt][_fFRACTION], e.g. digits_pt_f0.1")
    how = run.add_argument_group("how to train (defaults: the paper's protocol, but 64 px: the paper's is 256)")
    how.add_argument("--epochs", type=positive(int), default=10, metavar="N",
                     help="default %(default)s")
    how.add_argument("--batch-size", type=positive(int), default=32, metavar="N",
                     help="default %(default)s")
    how.add_argument("--lr", type=positive(float), default=5e-4, dest="learning_rate",
                     metavar="LR",
                     help="Adam learning rate (default %(default)s)")
    how.add_argument("--image-size", type=positive(int, MAX_IMAGE_SIZE), default=64, metavar="PX",
                     help="images are resized to this square size (default %(default)s)")
    how.add_argument("--amp", choices=AMP_MODES, default="off",
                     help="mixed precision: off (default, the paper's protocol), fp16 (with a "
                          "gradient scaler; CUDA only) or bf16 (CUDA or CPU)")
    how.add_argument("--cudnn-benchmark", action="store_true",
                     help="let cuDNN time its algorithms for each input shape: often faster, "
                          "but its trials raise peak GPU memory (off by default; recorded)")
    how.add_argument("--deterministic", action="store_true",
                     help="deterministic algorithms only: reproducible, often slower (recorded)")
    how.add_argument("--device", default="auto", metavar="DEV",
                     help="auto, cpu, cuda or cuda:N (default auto)")
    where = run.add_argument_group("measurement and output")
    where.add_argument("--db", default=os.environ.get("PEPR_DB", "runs.duckdb"),
                       metavar="FILE",
                       help="DuckDB file to append runs to (default $PEPR_DB or %(default)s)")
    where.add_argument("--country", default="DNK", metavar="ISO3",
                       help="ISO-3 country of the machine, for the grid's carbon intensity "
                            "(default DNK, the paper's lab)")
    where.add_argument("--carbon-intensity", type=positive(float), metavar="G",
                       help="override the country's carbon intensity, g CO2eq per kWh")
    where.add_argument("--shard", metavar="I/N", help="run only shard I of N of the plan (0-based)")
    where.add_argument("--done-in", metavar="FILE",
                       help="skip also the jobs ok in this database, read only (pepr-agent slurm's "
                            "tasks pass the merged one: a changed plan moves jobs between shards)")
    where.add_argument("--plan-digest", metavar="HEX",
                       help="refuse to run unless the whole plan (before --shard) is this one, as "
                            "pepr-agent slurm's tasks do: a models file or --config edited after "
                            "submission would move jobs between tasks")
    where.add_argument("--log", metavar="FILE", help="append the JSON lines here, not to stdout")
    where.add_argument("--quiet", action="store_true", help="no progress bars")
    where.add_argument("--dry-run", action="store_true", help="print the planned jobs and stop")
    where.add_argument("--config", metavar="FILE",
                       help="TOML file of defaults for these flags (keys like batch_size); "
                            "flags on the command line win")
    from agent import bench, slurm

    bench.add_parser(commands, positive, _list, _param_range)
    slurm.add_parser(commands, run)
    return top, run


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line, with defaults from --config when given."""
    top, run = parser()
    args = top.parse_args(argv)
    if getattr(args, "config", None):
        given = args
        run.set_defaults(**config_defaults(args.config, run))
        args = top.parse_args(argv)
        for action in run._actions:  # a list flag replaces the file's list, not extends it
            if isinstance(action, argparse._ExtendAction) and getattr(given, action.dest):
                setattr(args, action.dest, getattr(given, action.dest))
    return args


def config_defaults(path: str, run: argparse.ArgumentParser) -> dict:
    """Flag defaults from a TOML file, each value parsed and checked as its flag would be."""
    try:
        table = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise PeprError(f"--config: {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PeprError(f"--config: {path}: not a TOML file ({error})") from None
    actions = {a.dest: a for a in run._actions}
    flags = {a.option_strings[0][2:].replace("-", "_"): a for a in run._actions if a.option_strings}
    actions.update(flags)
    defaults = {}
    for key, value in table.items():
        action = actions.get(key)
        if action is None or key in ("config", "help", "debug"):
            raise PeprError(f"--config: {path}: unknown setting {key!r}")
        defaults[action.dest] = _config_value(action, value, f"--config: {path}: {key}")
    return defaults


def _config_value(action: argparse.Action, value, where: str):
    """A TOML value as its flag's value: true/false for switches, else what the flag takes."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise PeprError(f"{where}: expected true or false, got {value!r}")
        return value
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in items):
        raise PeprError(f"{where}: expected a string, a number or a list of them, got {value!r}")
    text = ",".join(map(str, items))
    try:
        parsed = action.type(text) if action.type is not None else text
    except argparse.ArgumentTypeError as error:
        raise PeprError(f"{where}: {error}") from None
    except (TypeError, ValueError):  # a plain type such as int, as argparse says it
        raise PeprError(f"{where}: invalid {getattr(action.type, '__name__', 'value')} value: {value!r}") from None
    if action.choices is not None and parsed not in action.choices:
        raise PeprError(f"{where}: expected one of {', '.join(action.choices)}, got {value!r}")
    return parsed


def plan_jobs(args):
    """The jobs this process runs (after sharding), checked against timm."""
    from agent import plan

    models = plan.models_from_flags(args, pretrained=any(args.regimes))
    shard = plan.parse_shard(args.shard) if args.shard else None
    jobs = plan.expand(
        models, args.datasets, args.regimes, args.fractions, args.seeds,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        image_size=args.image_size, amp=args.amp, experiment=args.experiment,
        cudnn_benchmark=args.cudnn_benchmark, deterministic=args.deterministic,
    )
    if args.plan_digest and plan.digest(jobs) != args.plan_digest:
        raise PeprError(f"--plan-digest: the plan ({len(jobs)} job(s)) is not the one submitted: a models file, "
                        "--config or --param-range draw changed since; run pepr-agent slurm again")
    return plan.shard(jobs, *shard) if shard else jobs


def checked_db(db, flag: str = "--db"):
    """The database given by `flag`, refused now, before any work, if it cannot be a pepr
    database (a path that does not exist yet is fine)."""
    from pepr.store import RunStore

    store = RunStore(db)
    try:
        store.check()
    except PeprError as error:
        raise type(error)(f"{flag}: {error}") from None  # a busy database stays exit 1
    return store


def make_writable(store, db) -> None:
    """Create the `--db` database's folder and file, or bring its schema up to date."""
    try:
        store.path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PeprError(f"--db: {db}: a file stands where its folder would be") from None
    except OSError as error:
        raise PeprError(f"--db: {db}: {error.strerror}") from None
    store.ensure()


def check_local_data(jobs, args, stores) -> None:
    """Refuse, before any work, a dataset file or folder here whose content is not what the ok
    runs of its experiment in `stores` were trained on (`agent.plan.check_data`). A dataset is
    read only where such runs recorded a digest to compare with (a new sweep reads nothing).
    Named datasets are checked where they are loaded: a task's --data-dir may be its node's alone."""
    from agent.data import load
    from agent.plan import check_data

    files = [job for job in jobs if Path(job.dataset).exists()]
    digest_of = functools.cache(lambda dataset: load(dataset, args.data_dir, args.image_size).digest)  # each once
    for store in stores:
        check_data(digest_of, files, store)


def run(args) -> int:
    asked_at = now()  # before the imports below, which take seconds
    from agent.measure import check_country

    from agent.plan import check_data, check_protocol

    store = checked_db(args.db)
    jobs = plan_jobs(args)
    country = check_country(args.country)
    check_protocol(jobs, store)
    done_in = checked_db(args.done_in, "--done-in") if args.done_in else None
    done_elsewhere = done_in.ok_job_keys() if done_in else set()
    if args.dry_run:  # no `ok` for runs on data rewritten since
        from pepr.claims import owners_gone

        check_local_data(jobs, args, filter(None, (store, done_in)))

        statuses = store.job_statuses() if store.exists() else {}
        done = {key for key, status in statuses.items() if status == "ok"} | done_elsewhere  # read once
        running = store.runs(status="running").to_dict("records") if store.exists() else []
        abandoned = {row["job_key"] for row, gone in zip(running, owners_gone(running), strict=True) if gone}  # the sweep takes these over
        for job in jobs:
            regime = "pretrained" if job.pretrained else "scratch"
            status = ("ok" if job.done_in(done) else "abandoned" if job.key in abandoned
                      else statuses.get(job.key, "todo"))
            print(f"{job.key}  {status:11}  {job.experiment:20}  "
                  f"{job.model:28}  {regime:10}  fraction {job.train_fraction:g}  seed {job.seed}")
        print(f"{len(jobs)} job(s)", file=sys.stderr)
        return 0

    from agent.data import load, subsample
    from agent.sweep import Interrupted, run_sweep
    from agent.train import resolve_device

    device = resolve_device(args.device)
    if args.amp == "fp16" and device.type != "cuda":
        raise PeprError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16")
    digests = {}
    for dataset in reversed(dict.fromkeys(job.dataset for job in jobs)):  # the sweep's first last: cached
        data = load(dataset, args.data_dir, args.image_size)
        digests[dataset], images = data.digest, len(data.labels["train"])
        fraction = min(job.train_fraction for job in jobs if job.dataset == dataset)  # a subset of the others
        kept = data.labels["train"][subsample(images, fraction)].tolist()
        if len(kept) < 2:
            raise PeprError(f"--fractions {fraction:g}: keeps 1 of the {images} train images of "
                            f"{dataset}; training needs at least 2")
        unseen = sorted(set(range(data.num_classes)) - set(kept))
        if unseen:
            raise PeprError(f"--fractions {fraction:g}: keeps {len(kept)} of the {images} train images of "
                            f"{dataset}, none of class {unseen[0]}; every class needs train images")
    for checked in filter(None, (store, done_in)):
        check_data(digests.__getitem__, jobs, checked)
    try:
        log = open(args.log, "a") if args.log else sys.stdout
    except OSError as error:
        raise PeprError(f"--log: {args.log}: {error.strerror}") from None
    try:
        make_writable(store, args.db)
        counts = run_sweep(jobs, store, device=device, data_dir=args.data_dir, country=country,
                           carbon_intensity=args.carbon_intensity, log=log, quiet=args.quiet,
                           done_elsewhere=done_elsewhere, asked_at=asked_at)
    except Interrupted as stop:
        print(f"pepr-agent: {stop}; {stop.outcome}", file=sys.stderr)
        return 128 + stop.signum
    finally:
        if log is not sys.stdout:
            with contextlib.suppress(OSError):  # each line is flushed: a failure was said there
                log.close()
    held = f", {counts['held']} held by another agent" if counts["held"] else ""
    tried = f", {counts['tried']} failed under another agent" if counts["tried"] else ""
    print(f"pepr-agent: {counts['ok']} ok, {counts['failed']} failed, "
          f"{counts['skipped']} already done{held}{tried}", file=sys.stderr)  # also --quiet: a Slurm log's last word
    return 1 if counts["failed"] or counts["tried"] else 0


def _main(argv: list[str]) -> int:
    args = parse(argv)
    if args.command == "bench":
        from agent.bench import bench

        return bench(args)
    if args.command == "slurm":
        from agent.slurm import command

        return command(args, argv)
    return run(args)


def main(argv: list[str] | None = None) -> int:
    """The console entry point; returns the exit status (see `pepr.cli_frame`)."""
    return run_command("pepr-agent", _main, argv)
