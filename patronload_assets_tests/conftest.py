import os
import socket
from pathlib import Path

import pytest
from lxml import etree

PROJECT_DIR = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def users_schema() -> etree.XMLSchema:
    """The project's schema of the <users> documents it sends."""
    from patronload_assets.domain.checks import PROJECT_XSD

    return etree.XMLSchema(etree.parse(str(PROJECT_XSD)))


def assert_valid_users(schema: etree.XMLSchema, xml: bytes) -> etree._Element:
    """The whole document parsed and validated at once: a path independent of the schema check's."""
    document = etree.fromstring(xml)
    if not schema.validate(document):
        errors = "\n".join(str(error) for error in list(schema.error_log)[:10])
        raise AssertionError(f"not valid against the project's users schema:\n{errors}")
    return document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's AWS server on a local port: boto3 talks to it over real HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_environment(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return os.environ


def staff_row(**values):
    """A cleaned staff row: Jane Doe, JDOE, everything else missing unless given."""
    from patronload_assets.domain import rules
    from patronload_assets.domain.values import clean_row

    row = dict.fromkeys(rules.STAFF_COLUMNS)
    row.update(KRB_NAME_UPPERCASE="JDOE", LEGAL_FIRST_NAME="Jane", LEGAL_LAST_NAME="Doe")
    row.update(values)
    return clean_row(row)


def student_row(**values):
    """A cleaned student row: Jo Stu, JSTU, everything else missing unless given."""
    from patronload_assets.domain import rules
    from patronload_assets.domain.values import clean_row

    row = dict.fromkeys(rules.STUDENT_COLUMNS)
    row.update(KRB_NAME_UPPERCASE="JSTU", LEGAL_FIRST_NAME="Jo", LEGAL_LAST_NAME="Stu")
    row.update(values)
    return clean_row(row)


def load(warehouse_path, bucket_dir, instance=None, run_config=None, **institution):
    """The whole lineage in process, on a SQLite warehouse and a local bucket (prefix ``alma``)."""
    import dagster as dg

    from patronload_assets import assets
    from patronload_assets.resources import InstitutionData, LocalBucket, SqliteWarehouse

    return dg.materialize(
        dg.load_assets_from_modules([assets]),
        instance=instance,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse_path)),
            "bucket": LocalBucket(directory=str(bucket_dir), prefix="alma"),
            "institution": InstitutionData(**institution),
        },
        run_config=run_config,
        raise_on_error=False,
    )
