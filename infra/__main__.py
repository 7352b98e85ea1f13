"""Pulumi entry point: ``pulumi up`` runs this with the repository's packages importable."""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi puts this folder first on sys.path; the program imports the repository's packages
# (the function registry above all), and a module here must never shadow one of them.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import pulumi  # noqa: E402

from infra import config, stack  # noqa: E402
from infra.lambdas import missing_archives  # noqa: E402

cfg = config.load()
missing = missing_archives(cfg.artifacts_dir)
if missing and not pulumi.runtime.is_dry_run():
    raise SystemExit(
        f"missing Lambda archives {', '.join(missing)} in {cfg.artifacts_dir}: "
        "run `python -m functions.aws.package` first"
    )
deployment = stack.build(cfg)
pulumi.export("websocket_url", deployment.websocket_url)
pulumi.export("entry_url", deployment.entry_url)
pulumi.export("history_url", deployment.history_url)
pulumi.export("functions", deployment.functions)
