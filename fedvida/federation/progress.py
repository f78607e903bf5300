"""Live progress of a federation in the terminal: one line per round."""

from __future__ import annotations

from typing import Any

from fedvida.reporting.console import console


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


class RoundPrinter:
    """Prints ``[method] round r/N  top1 ...  loss ...  down/up ...  s`` after each round."""

    def __call__(self, line: dict[str, Any]) -> None:
        server = line.get("server") or {}
        top1 = f"top1 {server['top1']:.3f}" if "top1" in server else "top1 -    "
        f1 = f"  F1 {server['macro_f1']:.3f}" if "macro_f1" in server else ""
        if "top1_missing" in server:  # on the clips whose audio is withheld
            f1 += f"  missing {server['top1_missing']:.3f}"
        loss = line.get("train", {}).get("train_loss")
        loss_text = f"  loss {loss:.3f}" if isinstance(loss, int | float) else ""
        fails = len(line.get("failures", []))
        fail_text = f"  [red]{fails} failed[/red]" if fails else ""
        skipped = "" if line.get("aggregated", True) else "  [yellow]not aggregated[/yellow]"
        privacy = line.get("privacy")
        eps = f"  eps {privacy['epsilon']:.3g}" if privacy else ""
        console.print(
            f"[bold]{line['method']}[/bold] round {line['round']}/{line.get('rounds', '?')}  "
            f"{top1}{f1}{loss_text}  clients {line.get('succeeded', 0)}/{line.get('sampled', 0)}"
            f"  down {_mb(line.get('bytes_down', 0))} up {_mb(line.get('bytes_up', 0))}"
            f"{eps}  {line.get('seconds', 0.0):.1f}s{fail_text}{skipped}"
        )
