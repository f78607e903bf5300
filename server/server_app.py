"""The fedvida ServerApp (Flower Message API).

A thin adapter: it resolves the fedvida config (``run_config`` keys ``config-path`` and
``overrides`` under ``flwr run``; the ``FEDVIDA_CONFIG_PATH`` / ``FEDVIDA_OVERRIDES`` environment
variables under ``run_simulation``, whose run_config is empty) and hands the grid to
`fedvida.federation.server.serve`, which runs FedAvg / FedProx / FedAdam over the shared model
parts for every configured method, with checkpoints, metrics.jsonl and report.md in
``runs/<name>/``.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the resolved fedvida config."""
    from fedvida.federation.progress import RoundPrinter
    from fedvida.federation.run_config import server_config
    from fedvida.federation.server import serve

    cfg = server_config(context.run_config)
    serve(grid, cfg, on_round=RoundPrinter())
    if context.run_config.get("config-path"):  # deployment: say where (`fedvida simulate` does)
        from fedvida.federation.run_config import run_dir
        from fedvida.federation.server import say

        say(f"run folder: {run_dir(cfg).resolve()} (report.md, metrics.jsonl, checkpoints/)")
