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

from functions.aws.package import archives  # noqa: E402
from infra import config, stack  # noqa: E402
from infra.lambdas import ArchiveMismatch, check_archives  # noqa: E402

cfg = config.load()
try:
    missing = check_archives(
        cfg.artifacts_dir,
        [a.name for a in archives()],
        cfg.lambda_architecture,
        cfg.lambda_runtime,
    )
except ArchiveMismatch as exc:
    raise pulumi.RunError(str(exc)) from None
if missing:
    build = (
        f"python -m functions.aws.package --arch {cfg.lambda_architecture}"
        f" --python {cfg.lambda_runtime.removeprefix('python')}"
    )
    if not pulumi.runtime.is_dry_run():
        raise pulumi.RunError(
            f"missing Lambda archives {', '.join(missing)} in {cfg.artifacts_dir}: run `{build}`"
        )
    pulumi.log.warn(f"no Lambda archives for {', '.join(missing)} yet; `{build}` builds them")
deployment = stack.build(cfg)
pulumi.export("websocket_url", deployment.websocket_url)
pulumi.export("entry_url", deployment.entry_url)
pulumi.export("history_url", deployment.history_url)
pulumi.export("functions", deployment.functions)
pulumi.export("image", deployment.image)
pulumi.export("alarm_topic", deployment.alarm_topic)
