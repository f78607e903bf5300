"""Terminal summaries of the stages' results (`fedvida.stages`), shared by the commands and the
main job (`fedvida.pipeline`), so that both print the same tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedvida.errors import ProblemLog
from fedvida.reporting.console import console, print_table

if TYPE_CHECKING:
    from fedvida.config import Config
    from fedvida.data.demo import DemoSummary
    from fedvida.stages import DictionaryResult, ExtractionResult, PlanResult


def print_demo(summary: DemoSummary, cfg: Config) -> None:
    """The demo dataset table (classes, clips, missing audio, speed)."""
    rows = [
        ("root", str(summary.root)),
        ("classes", f"{len(summary.classes)}: {', '.join(summary.classes)}"),
        ("clips", str(summary.clips)),
        ("no audio stream", str(summary.no_stream)),
        ("silent track", str(summary.silent)),
        ("seconds", f"{summary.seconds:.1f}"),
        ("clips/s", f"{summary.clips_per_second():.2f}"),
    ]
    print_table("demo dataset", ["", "value"], rows)
    if Path(summary.root) != Path(cfg.data.root):
        console.print(f"read it with --set data.root={summary.root}", markup=False)


def print_problems(log: ProblemLog, examples: int = 5) -> None:
    """Print a problem count by reason and the first `examples` problems."""
    if not len(log):
        console.print("problems: none")
        return
    counts = ", ".join(f"{k}={v}" for k, v in sorted(log.counts().items()))
    console.print(f"[bold yellow]problems: {len(log)}[/] ({counts}); not fatal, first ones:")
    for p in log.problems[:examples]:
        console.print(f"  {p.line()}", markup=False)


def print_plan(plan: Any, lacking: set[str] | None = None) -> None:
    """Print one row per client, the test set line and the plan-level skew.

    `lacking` (relpaths without usable audio, from probing) adds the natural-missing column and
    the clips that keep usable audio after withholding. The rate column appears when client
    rates differ; otherwise the caption states the one rate.
    """
    from fedvida.data.partition import skew_stats, summarize_plan

    summaries = summarize_plan(plan)
    same_rate = len(set(plan.client_rates)) <= 1
    columns = ["id", "clips", "cls", "H", "top class", "top%", "held"]
    columns += [] if same_rate else ["rate"]
    columns += [] if lacking is None else ["nat.", "kept"]
    rows: list[tuple[Any, ...]] = []
    for s, clips in zip(summaries, [*plan.clients, plan.test], strict=True):
        row: tuple[Any, ...] = (s.name, s.clips, s.classes, f"{s.entropy_bits:.2f}", s.dominant,
                                f"{s.dominant_share:.0%}", s.withheld)
        if not same_rate:
            row += ("-" if s.rate is None else f"{s.rate:.2f}",)
        if lacking is not None:  # natural missing; clips that keep usable audio
            row += (sum(c.relpath in lacking for c in clips),
                    sum(not c.withheld and c.relpath not in lacking for c in clips))
        rows.append(row)
    stats = skew_stats(plan)
    caption = (f"cls = classes present, H = label entropy (bits; mean over clients "
               f"{stats['mean_entropy_bits']:.2f} = {stats['mean_entropy_share']:.0%} of even), "
               f"top% = dominant class share (mean {stats['mean_dominant_share']:.0%}), "
               f"held = audio withheld ({stats['train_withheld_share']:.1%} of training clips")
    caption += f", rate {plan.client_rates[0]:.2f} per client)" if same_rate else ")"
    if lacking is None:
        caption += "; natural missing audio is counted by --probe and `fedvida data inspect`"
    else:
        caption += ("; nat. = no usable audio (no stream / silent / unreadable), kept = usable "
                    "audio not withheld")
    print_table(f"plan {plan.config_hash}: {plan.num_clients} clients, {len(plan.classes)} classes",
                columns, rows, caption)


def print_plan_result(result: PlanResult, scheme: str) -> None:
    """What `fedvida.stages.plan` made: the dataset line, the plan table, problems, the path."""
    index = result.index
    console.print(f"dataset {index.root} (MiT {index.version}): {len(index.classes)} classes, "
                  f"{len(index.train)} training + {len(index.test)} test clips; "
                  f"{scheme} split", markup=False)
    print_plan(result.plan, result.lacking)
    print_problems(result.problems)
    console.print(f"plan written to {result.path}", markup=False)


def print_extraction(result: ExtractionResult) -> None:
    """Clips per partition (cached, computed, failed, audio), seconds per stage, problems."""
    from fedvida.features.extract import STAGES

    rows = []
    for st in result.stats:
        failed = ", ".join(f"{k}={v}" for k, v in sorted(st.failed.items())) or "-"
        absent = ", ".join(f"{k}={v}" for k, v in sorted(st.audio_absent.items())) or "-"
        done = st.audio_present + sum(st.audio_absent.values())
        share = f"{st.audio_present / done:.0%}" if done else "-"
        rows.append((st.partition, st.total, st.cached, st.computed, failed, share, absent))
    print_table("extraction", ["part", "clips", "cached", "computed", "failed (skipped)",
                               "audio present", "audio absent"], rows)
    computed = result.computed
    if computed:
        stage = Counter[str]()
        for st in result.stats:
            stage.update(st.seconds)
        wall = max(1e-9, sum(st.wall for st in result.stats) - result.load_seconds)
        print_table(
            "seconds per computed clip, by stage (summed over threads)",
            [*STAGES, "end-to-end"],
            [(*(stage[s] / computed for s in STAGES), wall / computed)],
            caption=f"{computed / wall:.2f} clips/s end-to-end on {result.device}; model loading "
                    f"{result.load_seconds:.1f} s",
        )
    if result.problems:
        console.print(f"{result.problems.summary()}\nall problems: {result.problems_path}",
                      markup=False)


def print_dictionary(result: DictionaryResult, cfg: Config) -> None:
    """The built dictionary's table and its digest (in full: clients verify against it)."""
    d, dcfg = result.dictionary, cfg.dictionary
    if result.problems:
        console.print(f"[yellow]categories: {result.problems.summary()}[/yellow]")
    rows = [
        ("actions", f"{len(d.actions)} from {result.source}"),
        ("AudioSet labels", str(len(d.audio_labels))),
        ("model", f"{d.model_name} (weights {d.weights_sha256[:16]}...)"),
        ("templates", f"'{dcfg.action_template}' / '{dcfg.audio_template}'"),
        ("top_k", str(d.top_k)),
        ("time", f"model load {result.load_seconds:.1f} s, build {result.build_seconds:.1f} s"),
        ("written to", str(result.out)),
    ]
    print_table("semantic dictionary built", ["field", "value"], rows)
    print(f"digest {d.digest}")  # in full, never wrapped: clients verify against it
