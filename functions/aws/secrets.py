"""Settings on AWS: secrets come from Secrets Manager, named by ARN in the environment."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from typing import Any

from chat.settings import Settings, env_name

log = logging.getLogger("functions.aws.secrets")

# JSON object: environment variable -> "<secret ARN>" or "<secret ARN>#<JSON key>".
SECRETS_ENV = env_name("aws_secrets")


def secret_refs(environ: MutableMapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """The secrets ``environ`` asks for, as variable -> (ARN, JSON key or None)."""
    raw = environ.get(SECRETS_ENV, "").strip()
    if not raw:
        return {}
    spec = json.loads(raw)
    if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
        raise ValueError(f"{SECRETS_ENV} must be a JSON object of strings")
    refs: dict[str, tuple[str, str | None]] = {}
    for name, ref in spec.items():
        arn, _, key = ref.partition("#")
        refs[name] = (arn, key or None)
    return refs


def resolve_secrets(environ: MutableMapping[str, str], client: Any = None) -> list[str]:
    """Set each variable ``CHAT_AWS_SECRETS`` names from its secret; return the names set."""
    refs = secret_refs(environ)
    if not refs:
        return []
    if client is None:
        # Provided by the Lambda runtime, so function archives leave it out.
        import boto3  # type: ignore[import-untyped]

        client = boto3.client("secretsmanager")
    fetched: dict[str, str] = {}
    for name, (arn, key) in refs.items():
        if arn not in fetched:
            fetched[arn] = client.get_secret_value(SecretId=arn)["SecretString"]
        value = fetched[arn]
        if key is not None:
            document = json.loads(value)
            if key not in document:
                raise KeyError(f"secret {arn} has no key {key!r} (wanted for {name})")
            value = str(document[key])
        environ[name] = value
    return list(refs)


def reload_secrets(environ: MutableMapping[str, str] | None = None, client: Any = None) -> bool:
    """Read the named secrets again; True when a value changed (the secret was rotated)."""
    target = os.environ if environ is None else environ
    before = {name: target.get(name) for name in secret_refs(target)}
    resolve_secrets(target, client)
    changed = sorted(name for name, value in before.items() if target.get(name) != value)
    if changed:
        log.warning("secrets changed since they were read: %s", ", ".join(changed))
    return bool(changed)


def load_settings(client: Any = None) -> Settings:
    """Resolve the named secrets into the environment, then read Settings from it."""
    resolve_secrets(os.environ, client)
    return Settings.from_env()
