"""The AWS calls the adapters make, against moto: the bridge's Lambda invoke, secret reads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import lambda_simple_backends

from functions.aws.bridge import LambdaInvoker
from functions.aws.events import BRIDGE_SOURCE
from functions.aws.provision import app_credentials
from functions.aws.secrets import SECRETS_ENV, load_settings, reload_secrets, resolve_secrets
from functions.batch import BatchResult, StreamRecord
from functions.registry import REGISTRY
from functions.runtime.invoke import TransientFailure

pytestmark = pytest.mark.timeout(60)

REGION = "eu-west-1"
ACCOUNT = "123456789012"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield


def _function(name: str) -> None:
    iam = boto3.client("iam")
    role = iam.create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    boto3.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )


class Spy:
    """A boto3 client wrapper that records the invoke calls it passes on."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.client.invoke(**kwargs)


RECORDS = [
    StreamRecord(id="1-0", fields={"room": "lobby", "text": "hi", "sender": "alice"}, attempt=1),
    StreamRecord(id="2-0", fields={"room": "lobby", "text": "yo", "sender": "bob"}, attempt=2),
]


def test_bridge_invokes_the_function_lambda_with_the_batch(aws: None) -> None:
    _function("chat-test-message")
    spy = Spy(boto3.client("lambda"))
    invoker = LambdaInvoker(REGISTRY["message"], "chat-test-message", spy)
    # moto's Lambda answers with the payload it was sent: a batch with no failures.
    result = asyncio.run(invoker(RECORDS))
    assert result == BatchResult()
    ((call,),) = [spy.calls]
    assert call["FunctionName"] == "chat-test-message"
    assert call["InvocationType"] == "RequestResponse"
    assert json.loads(call["Payload"]) == {
        "source": BRIDGE_SOURCE,
        "function": "message",
        "records": [
            {
                "id": "1-0",
                "fields": {"room": "lobby", "text": "hi", "sender": "alice"},
                "attempt": 1,
            },
            {"id": "2-0", "fields": {"room": "lobby", "text": "yo", "sender": "bob"}, "attempt": 2},
        ],
    }


def test_bridge_reads_the_function_reply(aws: None) -> None:
    _function("chat-test-message")
    lambda_simple_backends[ACCOUNT][REGION].lambda_simple_results_queue.append(
        json.dumps({"failed": ["2-0"], "poison": {"1-0": "invalid_payload: no text"}})
    )
    invoker = LambdaInvoker(REGISTRY["message"], "chat-test-message", boto3.client("lambda"))
    result = asyncio.run(invoker(RECORDS))
    assert result == BatchResult(failed={"2-0"}, poison={"1-0": "invalid_payload: no text"})


def test_bridge_turns_a_function_error_into_a_transient_failure() -> None:
    class Unreachable:
        def invoke(self, **kwargs: Any) -> dict[str, Any]:
            raise ConnectionError("endpoint unreachable")

    with pytest.raises(TransientFailure, match="invoking chat-test-message failed"):
        asyncio.run(LambdaInvoker(REGISTRY["message"], "chat-test-message", Unreachable())(RECORDS))

    class Failing:
        def invoke(self, **kwargs: Any) -> dict[str, Any]:
            body = {"errorType": "TimeoutError", "errorMessage": "timed out"}
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}

    with pytest.raises(TransientFailure, match="TimeoutError: timed out"):
        asyncio.run(LambdaInvoker(REGISTRY["message"], "x", Failing())(RECORDS))


def test_secrets_fill_the_environment_before_settings(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm = boto3.client("secretsmanager")
    redis = sm.create_secret(Name="chat-test-redis-url", SecretString="rediss://:t0k@redis:6379/0")
    rds = sm.create_secret(
        Name="rds!db-1", SecretString=json.dumps({"username": "chat", "password": "s3cr3t"})
    )
    monkeypatch.setenv(
        SECRETS_ENV,
        json.dumps({"CHAT_REDIS_URL": redis["ARN"], "PGPASSWORD": rds["ARN"] + "#password"}),
    )
    monkeypatch.delenv("CHAT_REDIS_URL", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    settings = load_settings()
    assert settings.redis_url == "rediss://:t0k@redis:6379/0"
    assert os.environ["PGPASSWORD"] == "s3cr3t"


def test_a_missing_json_key_names_the_secret(aws: None) -> None:
    sm = boto3.client("secretsmanager")
    rds = sm.create_secret(Name="rds!db-2", SecretString=json.dumps({"username": "chat"}))
    environ = {SECRETS_ENV: json.dumps({"PGPASSWORD": rds["ARN"] + "#password"})}
    with pytest.raises(KeyError, match="password"):
        resolve_secrets(environ)
    assert resolve_secrets({}) == []


def test_the_first_run_fills_the_empty_secret_and_later_runs_keep_it(aws: None) -> None:
    secretsmanager = boto3.client("secretsmanager")
    arn = secretsmanager.create_secret(Name="chat-test-db-app")["ARN"]
    first = app_credentials(secretsmanager, arn, "chat_app")
    stored = json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])
    assert stored == {"username": "chat_app", "password": first}
    assert len(first) >= 32
    assert app_credentials(secretsmanager, arn, "chat_app") == first
    rotated = app_credentials(secretsmanager, arn, "chat_app", rotate=True)
    assert rotated != first
    assert json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"]) == {
        "username": "chat_app",
        "password": rotated,
    }


def test_a_rotated_secret_is_read_again(aws: None) -> None:
    secretsmanager = boto3.client("secretsmanager")
    arn = secretsmanager.create_secret(
        Name="rds!db-9", SecretString=json.dumps({"username": "chat", "password": "before"})
    )["ARN"]
    environ = {SECRETS_ENV: json.dumps({"PGPASSWORD": f"{arn}#password"})}
    resolve_secrets(environ, secretsmanager)
    assert environ["PGPASSWORD"] == "before"
    assert reload_secrets(environ, secretsmanager) is False
    # What RDS does every 7 days: a new AWSCURRENT version of the secret.
    secretsmanager.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": "chat", "password": "after"})
    )
    assert reload_secrets(environ, secretsmanager) is True
    assert environ["PGPASSWORD"] == "after"
