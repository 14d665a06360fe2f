"""The job plan: models x datasets x regimes x seeds, job keys and sharding."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from pepr.errors import PeprError, described
from pepr.store import PROTOCOL, job_key


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run to do: every setting that changes its result."""

    model: str
    dataset: str
    pretrained: bool
    train_fraction: float
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    image_size: int
    amp: str  # mixed precision: off, fp16 or bf16
    experiment: str
    optimizer: str = "adam"
    metric: str = "test_accuracy"
    cudnn_benchmark: bool = False  # let cuDNN time algorithms per shape (faster, more memory)
    deterministic: bool = False  # deterministic algorithms only (slower, reproducible)
    typed_dataset: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def config(self) -> dict:
        """The job's settings as a JSON-able dict (what the job key hashes).

        Settings added later are hashed only when not at their default, and `amp` off as
        `false` as before modes existed, so old jobs keep their keys.
        """
        config = dataclasses.asdict(self)
        del config["typed_dataset"]
        if config["amp"] == "off":
            config["amp"] = False
        for name in ("cudnn_benchmark", "deterministic"):
            if not config[name]:
                del config[name]
        return config

    @functools.cached_property  # hashed once: a plan asks for keys several times per job
    def key(self) -> str:
        return job_key(self.config())

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        """Its key, and the key it had with its dataset as typed (`./a/x.npz`): a database
        from before each dataset had one spelling holds its runs under that one."""
        if self.typed_dataset in (None, self.dataset):
            return (self.key,)
        return (self.key, job_key({**self.config(), "dataset": self.typed_dataset}))

    def done_in(self, ok_keys: set[str]) -> bool:
        """Whether one of its keys is among the keys of `ok` runs."""
        return not ok_keys.isdisjoint(self.keys)


def digest(jobs: Sequence[Job]) -> str:
    """A short digest of a whole plan: its jobs' keys, in order."""
    return hashlib.sha256("\n".join(job.key for job in jobs).encode()).hexdigest()[:16]


def canonical_dataset(spec: str) -> str:
    """One spelling per dataset, so that a resumed sweep finds its jobs: a file or folder as a
    normal path, relative to the working folder where it lies inside it (`./a//x.npz` and
    `$PWD/a/x.npz` are `a/x.npz`), a name in lower case (`DermaMNIST` is `dermamnist`)."""
    if "://" in spec:
        return spec  # refused when loaded
    if not (spec.endswith(".npz") or "/" in spec or Path(spec).is_dir()):
        return spec.lower()
    path = Path(os.path.abspath(spec))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def dataset_label(dataset: str) -> str:
    """A short name for a dataset spec: `digits`, `dermamnist`, or a file or folder stem (the
    working folder's for `.`)."""
    path = Path(dataset)
    if dataset.endswith(".npz") or "/" in dataset or path.is_dir():
        stem = path.stem
        return stem if stem.strip(".") else Path(os.path.abspath(dataset)).stem or "dataset"
    return dataset.lower()


def default_experiment(dataset: str, pretrained: bool, fraction: float) -> str:
    """The normalisation group of a job, e.g. `digits`, `dermamnist_pt`, `digits_f0.1`."""
    return (
        dataset_label(dataset)
        + ("_pt" if pretrained else "")
        + ("" if fraction == 1 else f"_f{fraction:g}")
    )


def expand(
    models: Sequence[str],
    datasets: Sequence[str],
    pretrained: Sequence[bool],
    fractions: Sequence[float],
    seeds: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    image_size: int,
    amp: str,
    experiment: str | None = None,
    cudnn_benchmark: bool = False,
    deterministic: bool = False,
) -> list[Job]:
    """Every combination, dataset-major (so a dataset is loaded once), duplicates dropped."""
    spelt = {dataset: canonical_dataset(dataset) for dataset in datasets}
    jobs = [
        Job(
            model=model,
            dataset=spelt[dataset],
            typed_dataset=dataset,
            pretrained=pt,
            train_fraction=float(fraction),
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            image_size=image_size,
            amp=amp,
            experiment=experiment or default_experiment(spelt[dataset], pt, fraction),
            cudnn_benchmark=cudnn_benchmark,
            deterministic=deterministic,
        )
        for dataset in datasets
        for pt in pretrained
        for fraction in fractions
        for model in models
        for seed in seeds
    ]
    return list(dict.fromkeys(jobs))


def check_protocol(jobs: Sequence[Job], store) -> None:
    """Refuse a plan that would mix datasets or protocols in one experiment (normalised together),
    within itself or with the runs in `store` (a RunStore). A PeprError names the experiment and
    the settings that differ, and suggests --experiment.
    """
    datasets: dict[str, str] = {}
    for job in jobs:
        first = datasets.setdefault(job.experiment, job.dataset)
        if first != job.dataset:
            raise PeprError(f"experiment {job.experiment!r} would hold runs of {first} and of {job.dataset}; "
                            "sweep them one at a time, each with its own --experiment")
    if not store.exists():
        return
    stored = store.runs(experiments=sorted({job.experiment for job in jobs}))
    specs = {config: _dataset_spec(config) for config in stored["config"].dropna().unique()}  # each once
    stored = stored.assign(spec=stored["config"].map(specs))
    stored_protocols = stored[["experiment", "dataset", "spec", *PROTOCOL]].drop_duplicates()
    planned = {(job.experiment, job.dataset, tuple(getattr(job, name) for name in PROTOCOL)): None for job in jobs}
    for experiment, dataset, values in planned:
        theirs = stored_protocols[stored_protocols["experiment"] == experiment]
        for row in theirs.to_dict("records"):
            # A run of the agent names its dataset file in its config; an imported one, by label.
            mine = {"dataset": dataset if isinstance(row["spec"], str) else dataset_label(dataset),
                    **dict(zip(PROTOCOL, values))}
            row["dataset"] = row["spec"] if isinstance(row["spec"], str) else row["dataset"]
            differ = [name for name in mine if not pd.isna(row[name]) and row[name] != mine[name]]
            if differ:
                raise PeprError(
                    f"experiment {experiment!r} already holds runs with "
                    + ", ".join(f"{name}={row[name]}" for name in differ)
                    + " (this sweep: " + ", ".join(f"{name}={mine[name]}" for name in differ)
                    + "); name another with --experiment"
                )


def check_data(digest_of: Callable[[str], str], jobs: Sequence[Job], store) -> None:
    """Refuse a sweep whose dataset holds other images or labels (`digest_of(dataset)`:
    `agent.data.content_digest`, asked only for the experiments whose ok runs in `store`
    recorded one) than those runs were trained on: their results and the new ones cannot be
    ranked together, nor the old ones count as done."""
    if not store.exists() or not jobs:
        return
    experiments = {job.experiment: job.dataset for job in jobs}
    stored = store.runs(status="ok", experiments=sorted(experiments))
    for experiment, dataset in experiments.items():
        theirs = set(stored.loc[stored["experiment"] == experiment, "dataset_digest"].dropna())
        if not theirs:
            continue
        digest = digest_of(dataset)
        other = sorted(theirs - {digest})
        if other:
            raise PeprError(
                f"--datasets {dataset}: not the images and labels that experiment {experiment!r} in "
                f"{store.path} was trained on (content digest {digest[:12]} now, "
                f"{other[0][:12]} then); runs on other data cannot be ranked together: "
                "name another with --experiment, or use another --db")


def _dataset_spec(config: str) -> str | None:
    """The dataset a stored run's job config names, in its one spelling (None if none)."""
    try:
        spec = json.loads(config).get("dataset")
    except (ValueError, AttributeError):
        return None
    return canonical_dataset(spec) if isinstance(spec, str) else None


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not int(match[1]) < int(match[2]):
        raise PeprError(f"--shard: expected I/N with 0 <= I < N, e.g. 0/4, got {text!r}")
    return int(match[1]), int(match[2])


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Shard `index` of `count`: every count-th job by sorted job key, in plan order."""
    keys = sorted(job.key for job in jobs)
    mine = {key for position, key in enumerate(keys) if position % count == index}
    return [job for job in jobs if job.key in mine]


def check_models(names: Iterable[str]) -> list[str]:
    """The names, or a PeprError naming the first unknown one with the closest timm names."""
    names = list(names)
    for name in names:
        problem = unknown_model(name)
        if problem:
            raise PeprError(f"--models: {problem}")
    return names


def unknown_model(name: str) -> str | None:
    """`unknown timm model 'x'; did you mean ...?`, or None for a timm model (an `arch.tag`
    name only with weights timm knows by that tag)."""
    import timm

    arch, dot, _ = name.partition(".")
    if timm.is_model(name):
        tags = timm.list_pretrained(f"{arch}.*") if dot else []
        if not dot or name in tags:
            return None
        known = f"{arch}'s are {', '.join(tags[:4])}{', ...' if len(tags) > 4 else ''}" if tags else f"use {arch}"
        return f"timm has no weights {name!r}; {known}"
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.5)
    return f"unknown timm model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")


def read_model_file(path: str) -> list[str]:
    """Model names from a text file, one a line; blank lines and `#` comments ignored; an
    unknown name refused with its line number."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # a BOM, as Notepad writes
    except OSError as error:
        raise PeprError(f"--models-file: {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise PeprError(f"--models-file: {path}: not a text file") from None
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.split("#", 1)[0].strip()
        if name:
            problem = unknown_model(name)
            if problem:
                raise PeprError(f"--models-file: {path}, line {number}: {problem}")
            names.append(name)
    return names


def count_params(name: str) -> int:
    """Trainable parameters of a timm architecture as built by default, without allocating it."""
    import timm
    import torch

    from agent.train import trainable_params

    with torch.device("meta"):
        return trainable_params(timm.create_model(name, pretrained=False))


PROGRESS_DELAY_S = 2.0  # a draw that takes longer shows its progress


def sample_models(
    low: float, high: float, count: int, seed: int, *, pretrained: bool, counter=count_params, quiet: bool = False
) -> list[str]:
    """`count` timm architectures with low <= params <= high, drawn in a seeded order.

    With `pretrained`, only architectures that timm has pretrained weights for are drawn.
    """
    import timm
    from tqdm import tqdm

    pool = timm.list_models(pretrained=pretrained)
    pool = sorted({name.split(".")[0] for name in pool})
    random.Random(seed).shuffle(pool)
    chosen, unbuilt = [], []
    # Building each architecture takes a fraction of a second: a narrow range may take minutes.
    bar = dict(delay=PROGRESS_DELAY_S, leave=False, file=sys.stderr, disable=quiet,
               mininterval=0.1 if sys.stderr.isatty() else 60)  # a log file (Slurm's) gets a line a minute
    for name in tqdm(pool, desc="counting parameters", unit="model", **bar):
        try:
            params = counter(name)
        except Exception as error:  # an architecture that does not build by default is skipped
            unbuilt.append(f"{name}: {described(error)}")
            continue
        if low <= params <= high:
            chosen.append(name)
            if len(chosen) == count:
                return chosen
    raise PeprError(
        f"--param-range: only {len(chosen)} of timm's {len(pool)} architectures have {low:g} to "
        f"{high:g} parameters, {count} asked for"
        + (f"; {len(unbuilt)} could not be built, e.g. {unbuilt[0]}" if unbuilt else "")
    )


def models_from_flags(args, *, pretrained: bool) -> list[str]:
    """The models named by --models, --models-file and --param-range/--sample, checked against
    timm, duplicates dropped (with `pretrained`, only architectures timm has weights for are drawn)."""
    models = list(args.models)
    if args.models_file:
        models += read_model_file(args.models_file)
    if (args.param_range is None) != (args.sample is None):
        raise PeprError("--param-range and --sample go together")
    if args.param_range:
        models += sample_models(*args.param_range, args.sample, args.sample_seed, pretrained=pretrained,
                                quiet=args.quiet)
    if not models:
        empty = f" (--models-file {args.models_file} names none)" if args.models_file else ""
        raise PeprError(f"no models{empty}: give --models, --models-file or --param-range with --sample")
    check_models(args.models)  # a file's names were checked as read; drawn names are timm's own
    return list(dict.fromkeys(models))
