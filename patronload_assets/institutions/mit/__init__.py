"""MIT Libraries: the rules of docs/patron-rules.md (``rules.py``), the templates of its staff and
student records, its department tables (JSON), its queries (``sql/mit/``) and the synthetic
warehouse of the embedded default (``synthetic.py``). ``RULES`` is what the engine asks."""

from pathlib import Path

from ...domain.institution import PatronType, Rules
from .. import queries_folder
from . import rules, synthetic

RULES = Rules(
    name="mit",
    title="MIT Libraries",
    folder=Path(__file__).resolve().parent,
    queries=queries_folder("mit"),
    person_key=rules.PERSON_KEY,
    person_key_title="Kerberos name",
    missing_key_reason=rules.REJECTED_NO_KERBEROS_NAME,
    identifier_columns=rules.IDENTIFIER_COLUMNS,
    identifier_fields=rules.IDENTIFIER_FIELDS,
    identifiers=rules.identifiers,
    staff=PatronType("staff", rules.STAFF_COLUMNS, rules.staff_fields),
    student=PatronType("student", rules.STUDENT_COLUMNS, rules.student_fields),
    create_warehouse=synthetic.create_warehouse,
)
