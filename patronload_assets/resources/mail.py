"""Where run reports go: SES in production, an outbox folder of .eml files."""

from __future__ import annotations

import os
import tempfile
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field


class Mailer(dg.ConfigurableResource):
    """Where run reports go. ``recipients`` is comma-separated."""

    recipients: str = "patronload-reports@localhost"
    sender: str = "patronload@localhost"
    workspace: str = "dev"
    send_attempts: int = Field(default=3, description="Tries per tick before the report waits for the next.")
    backoff_seconds: float = Field(default=2.0, description="First wait between tries; doubles each time.")

    def recipient_list(self) -> list[str]:
        return [address.strip() for address in self.recipients.split(",") if address.strip()]

    def send(self, message: EmailMessage, name: str) -> str:
        """Deliver ``message``; ``name`` identifies it (run id and kind). Returns where it went."""
        raise NotImplementedError


class OutboxMailer(Mailer):
    """Messages written as ``.eml`` files to a folder: the embedded default."""

    directory: str

    def send(self, message: EmailMessage, name: str) -> str:
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.eml"
        copies = 1
        while target.exists():  # never overwrite a message: a second one shows as such
            copies += 1
            target = folder / f"{name}-{copies}.eml"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sending-", delete=False) as partial:
            partial.write(message.as_bytes())
        os.replace(partial.name, target)
        return str(target)


class SesMailer(ResourceWithBoto3Configuration, Mailer):
    """Amazon SES through boto3 ``send_raw_email`` (dagster-aws has no SES resource)."""

    def send(self, message: EmailMessage, name: str) -> str:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile_name)
        client = session.client(
            "ses",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(retries={"max_attempts": self.max_attempts or 5, "mode": "standard"}),
        )
        response = client.send_raw_email(
            Source=self.sender,
            Destinations=self.recipient_list(),
            RawMessage={"Data": message.as_bytes()},
        )
        return f"SES message {response['MessageId']}"
