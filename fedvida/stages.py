"""The stages of fedvida as typed library calls: one function per stage, a dataclass per result.

Every stage takes a validated `Config` (loaded once by the caller) plus explicit arguments and
returns what it made; none parses arguments or prints a table. The commands
(`fedvida/commands/*.py`) parse their arguments, call one of these and print the result
(`fedvida.reporting.stages`); the main job (`fedvida.pipeline`) and the sweep
(`fedvida.sweep.prepare`) chain them with the config they already hold.

=============  ============================  =========================================
stage          function                      command
=============  ============================  =========================================
demo data      `demo(cfg)`                   ``fedvida data demo``
plan           `plan(cfg)`                   ``fedvida partition``
extraction     `extract(cfg)`                ``fedvida extract --all``
dictionary     `dictionary(cfg)`             ``fedvida dictionary build``
centralised    `train(cfg, methods)`         ``fedvida train``
federated      `simulate(cfg, methods, n)`   ``fedvida simulate``
=============  ============================  =========================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvida.config import Config
from fedvida.errors import InputError, ProblemLog

if TYPE_CHECKING:
    from fedvida.data.demo import DemoSummary
    from fedvida.data.mit import DatasetIndex
    from fedvida.data.partition import Plan
    from fedvida.features.extract import ExtractStats
    from fedvida.semantics.dictionary import SemanticDictionary
    from fedvida.training.central import CentralData, EpochHook, MethodResult, SeedRuns

Partition = int | str  # a client id or "test"


# ---------------------------------------------------------------------------- demo data
def demo(cfg: Config, out: Path | None = None, *, progress: bool = False) -> DemoSummary:
    """Write the demo dataset of ``cfg.demo`` (MiT layout) to ``out`` (default ``demo.out``).

    Returns the `fedvida.data.demo.DemoSummary` (root, classes, counts, seconds).

    Raises
    ------
    InputError
        When ``out`` is a file, or a non-empty folder that is not a demo dataset.
    """
    from fedvida.data.demo import write_demo_dataset

    return write_demo_dataset(cfg.demo, Path(out) if out is not None else cfg.demo.out,
                              progress=progress)


# ---------------------------------------------------------------------------- plan
@dataclass
class PlanResult:
    """What `plan` made.

    Attributes
    ----------
    plan
        The partition plan, saved at ``path``.
    path
        ``partition.plan``.
    index
        The dataset index it was made from (classes, clips, problems of the index files).
    problems
        The index's problems, plus the probe's when ``probe`` was asked.
    lacking
        With ``probe``: relpaths of clips without usable audio (no stream, silent, unreadable);
        None otherwise.
    """

    plan: Plan
    path: Path
    index: DatasetIndex
    problems: ProblemLog
    lacking: set[str] | None = None


def plan(cfg: Config, *, probe: bool = False,
         on_clip: Callable[[], None] | None = None) -> PlanResult:
    """Partition the dataset's clips over clients, withhold audio, write ``partition.plan``.

    Parameters
    ----------
    cfg
        ``data`` (which clips), ``partition`` (clients, scheme, withholding, plan path); with
        ``probe`` also ``extract.silence_dbfs``, ``sample_rate`` and ``workers``.
    probe
        Also open every clip's audio to count natural missing audio per client (slow).
    on_clip
        Called after each probed clip (progress).

    Raises
    ------
    ConfigError, InputError
        Bad dataset layout, too few clips for the clients (one line naming the field).
    """
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import make_plan

    index = load_dataset(cfg.data)
    made = make_plan(index, cfg.partition)
    path = Path(cfg.partition.plan)
    made.save(path)
    problems = ProblemLog()
    problems.extend(index.problems)
    lacking: set[str] | None = None
    if probe:
        from fedvida.data.inspect import inspect_clips

        clips = index.train + index.test
        report = inspect_clips(index, clips, cfg.extract.silence_dbfs, cfg.extract.sample_rate,
                               on_clip=on_clip, workers=cfg.extract.workers)
        usable = {f.clip.relpath for f in report.facts if f.audio_ok and not f.silent}
        lacking = {c.relpath for c in clips} - usable
        problems.extend(report.problems)
    return PlanResult(made, path, index, problems, lacking)


# ---------------------------------------------------------------------------- extraction
@dataclass
class ExtractionResult:
    """What `extract` did, per partition.

    Attributes
    ----------
    stats
        One `fedvida.features.extract.ExtractStats` per partition, in the order extracted.
    problems
        Failed videos and clips without usable audio.
    problems_path
        ``<extract.cache_dir>/extract-problems.jsonl`` when there were problems, else None.
    device
        Torch device the encoders ran on.
    load_seconds
        Time spent loading the encoders (s).
    """

    stats: list[ExtractStats]
    problems: ProblemLog
    problems_path: Path | None
    device: str
    load_seconds: float

    @property
    def computed(self) -> int:
        """Clips computed in this call (cached ones not counted)."""
        return sum(st.computed for st in self.stats)


def partitions_of(plan: Plan, wanted: Sequence[Partition] = ()) -> list[Partition]:
    """The partitions named by ``wanted`` (client ids, as int or text, or ``"test"``; empty:
    every client and ``"test"``).

    Raises
    ------
    InputError
        For a name that is neither ``test`` nor a client id of the plan.
    """
    if not wanted:
        return [*range(plan.num_clients), "test"]
    out: list[Partition] = []
    for raw in map(str, wanted):
        if raw == "test":
            out.append("test")
            continue
        try:
            k = int(raw)
        except ValueError:
            raise InputError(f"--client {raw!r}: expected a client id or 'test'") from None
        if not 0 <= k < plan.num_clients:
            raise InputError(f"--client {k}: the plan has clients 0..{plan.num_clients - 1}")
        out.append(k)
    return out


def extract(
    cfg: Config,
    partitions: Sequence[Partition] | None = None,
    *,
    device: str | None = None,
    clips: Path | None = None,
    progress: bool = False,
) -> ExtractionResult:
    """Extract and cache the features of the plan's partitions (``partition.plan`` must exist).

    Parameters
    ----------
    cfg
        ``extract`` (encoders, cache), ``partition.plan``.
    partitions
        Client ids (int or text) and/or ``"test"``; None or empty: every client and ``"test"``.
    device
        ``cpu`` | ``cuda`` | ``cuda:N`` (default ``extract.device``).
    clips
        The folder holding these clips under the plan's relative paths (a deployment node's
        own copy, docs/deployment.md "N nodes"): clips are read, and keyed in the store, there
        (default: the plan's dataset root).
    progress
        Show a progress bar (clips/s).

    Raises
    ------
    InputError
        The plan file is missing or unreadable, or a partition is not in the plan.
    """
    from fedvida.data.partition import Plan
    from fedvida.features.extract import FrozenEncoders, extract_partition

    loaded = Plan.load(Path(cfg.partition.plan))
    parts = partitions_of(loaded, partitions or ())
    if clips is not None:  # a node's own clips: keyed, and read, at their local paths
        loaded.dataset_root = str(clips)
    encoders = FrozenEncoders(cfg.extract, device)
    problems = ProblemLog()
    total = sum(len(loaded.partition(p)) for p in parts)
    stats: list[ExtractStats] = []

    def run(on_clip: Callable[[int], None] | None,
            on_part: Callable[[Partition], None] | None) -> None:
        for part in parts:
            if on_part is not None:
                on_part(part)
            stats.append(extract_partition(cfg, loaded, part, encoders, on_clip=on_clip,
                                           problems=problems))

    try:
        if progress:
            from fedvida.reporting.console import rate_progress

            with rate_progress("clips") as bar:
                task = bar.add_task("extract", total=total)
                run(lambda n: bar.advance(task, n),
                    lambda p: bar.update(task, description=f"extract (now {p})"))
        else:
            run(None, None)
    finally:
        encoders.close()  # the decode worker processes
    log = None
    if problems:
        log = Path(cfg.extract.cache_dir) / "extract-problems.jsonl"
        problems.write_jsonl(log)
    return ExtractionResult(stats, problems, log, encoders.device, encoders.load_seconds)


# ---------------------------------------------------------------------------- dictionary
@dataclass
class DictionaryResult:
    """What `dictionary` built.

    Attributes
    ----------
    dictionary
        The artifact, written to ``out`` (its ``digest`` is what clients verify).
    out
        The artifact folder.
    source
        Where the action labels came from (a file, the bundled MiT v1 list).
    problems
        Bad rows of the categories file (not fatal).
    load_seconds, build_seconds
        Sentence-model load time and embedding + writing time (s).
    """

    dictionary: SemanticDictionary
    out: Path
    source: str
    problems: ProblemLog
    load_seconds: float
    build_seconds: float


def dictionary(
    cfg: Config,
    out: Path | None = None,
    *,
    all_mit_v1: bool = False,
    categories_file: Path | None = None,
) -> DictionaryResult:
    """Embed the action labels and AudioSet's labels; write the semantic dictionary artifact.

    Parameters
    ----------
    cfg
        ``dictionary`` (model, templates, top_k, out) and ``data`` (where the labels are).
    out
        Artifact folder (default ``dictionary.out``).
    all_mit_v1, categories_file
        Other label sources than the dataset's (the 339 bundled MiT v1 categories, a file).

    Raises
    ------
    ConfigError
        No labels found, or the sentence model cannot be loaded locally.
    """
    from fedvida.semantics import build_dictionary, load_sentence_embedder, resolve_actions

    dcfg = cfg.dictionary
    target = Path(out) if out is not None else Path(dcfg.out)
    problems = ProblemLog()
    actions, source = resolve_actions(cfg, all_mit_v1=all_mit_v1,
                                      categories_file=categories_file, problems=problems)
    start = time.perf_counter()
    embedder = load_sentence_embedder(dcfg.model, device=dcfg.device)
    loaded = time.perf_counter()
    built = build_dictionary(actions, target, embedder=embedder,
                             action_template=dcfg.action_template,
                             audio_template=dcfg.audio_template, top_k=dcfg.top_k)
    return DictionaryResult(built, target, source, problems, loaded - start,
                            time.perf_counter() - loaded)


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What `train` (the centralised reference) produced.

    Attributes
    ----------
    results
        One `fedvida.training.central.MethodResult` per method, then the linear probe.
    folder
        The run folder (config, metrics.json / .csv, checkpoints, plots).
    data
        The pooled training, validation and test features it used.
    """

    results: list[MethodResult]
    folder: Path
    data: CentralData

    @property
    def test(self) -> dict[str, dict[str, float]]:
        """``{method: test metrics}``."""
        return {r.method: r.test for r in self.results}


def train(
    cfg: Config,
    methods: Sequence[str],
    *,
    data: CentralData | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train ``methods`` centrally on the pooled client caches (the reference); write a run folder.

    Parameters
    ----------
    cfg
        ``train``, ``model``, the plan and the feature cache (``fedvida extract`` done).
    methods
        Method names (`fedvida.config.METHODS`), trained one after another.
    data
        Features already loaded with `fedvida.training.central.load_central_data`.
    on_epoch
        ``on_epoch(method, epoch, metrics)`` after every epoch (progress).
    """
    from fedvida.training.central import load_central_data, run_central

    data = data if data is not None else load_central_data(cfg, methods)
    results, folder = run_central(cfg, methods, data=data, on_epoch=on_epoch)
    assert folder is not None  # run_central writes by default
    return TrainResult(results, folder, data)


@dataclass
class SeedsResult:
    """What `train_seeds` produced: ``folder`` holds ``seed-<s>/``, ``missing_audio.md`` and
    ``seeds.json``."""

    runs: SeedRuns
    folder: Path
    title: str


def train_seeds(
    cfg: Config,
    methods: Sequence[str],
    seeds: Sequence[int],
    on_seed: Callable[[int, list[MethodResult]], None] | None = None,
) -> SeedsResult:
    """Train ``methods`` (with the video-only and real-audio references) once per seed.

    Writes ``<train.runs_dir>/train-<name>-<stamp>/seed-<s>/`` and, beside them, the
    missing-audio summary over seeds (mean +- std, paired bootstrap CI) as ``missing_audio.md``
    and ``seeds.json``.
    """
    import json

    from fedvida.reporting.missing import SEED_CAPTION, SEED_HEADER, seed_rows
    from fedvida.reporting.runlog import markdown_table
    from fedvida.training.central import run_folder, run_seeds

    folder = run_folder(cfg)
    runs = run_seeds(cfg, methods, seeds, folder, on_seed=on_seed)
    rows = seed_rows(runs.summary)
    title = f"Missing audio over seeds {', '.join(map(str, seeds))} (centralised)"
    (folder / "missing_audio.md").write_text("\n".join(
        [f"# {title}", "", SEED_CAPTION, "", *markdown_table(SEED_HEADER, rows), ""]))
    (folder / "seeds.json").write_text(json.dumps(
        {"seeds": list(seeds), "summary": runs.summary, "per_seed": runs.per_seed}, indent=1))
    return SeedsResult(runs, folder, title)


# ---------------------------------------------------------------------------- federation
@dataclass
class SimulationResult:
    """What `simulate` produced.

    Attributes
    ----------
    results
        ``{method: final metrics}`` (server metrics of the reported round, chosen by
        ``federation.select_round``, with ``selected_round``; ``rounds``, ``seconds``,
        ``bytes_down``, ``bytes_up``; ``epsilon`` / ``delta`` under DP).
    folder
        The run folder (config.yaml, metrics.jsonl, checkpoints/, report.md, plots/).
    """

    results: dict[str, dict[str, Any]]
    folder: Path


def simulate(
    cfg: Config,
    methods: Sequence[str],
    name: str,
    *,
    resume: Path | None = None,
    verbose: bool = False,
) -> SimulationResult:
    """Train ``methods`` federated, one after another, in Flower's simulation engine.

    Parameters
    ----------
    cfg
        The plan, feature cache and dictionary must exist (the stages above).
    methods
        Method names, trained in this order in one federation (one Ray start).
    name
        Run folder name under ``train.runs_dir``.
    resume
        A run folder to continue from its checkpoints with its saved config (``cfg``,
        ``methods`` and ``name`` are then ignored).
    verbose
        Show Flower's own log lines.

    Raises
    ------
    FedvidaError
        The federation ended early or a round could not aggregate (one line naming the folder).
    """
    from fedvida.federation.runner import run_federated

    results = run_federated(cfg, list(methods), name, resume=resume, verbose=verbose)
    folder = Path(resume) if resume is not None else Path(cfg.train.runs_dir) / name
    return SimulationResult(results, folder)

