"""Example University: an example institution, modeled on UC Berkeley's published loader, to show
what an institution other than MIT writes (its rules document is ``rules.md``, a page). Its rules
(``rules.py``), templates, department tables, exclusion list (``excluded.json``), queries
(``sql/example/``) and synthetic warehouse (``synthetic.py``). ``RULES`` is what the engine asks."""

import json
from pathlib import Path

from ...domain.institution import PatronType, Rules
from ...domain.values import person_keys
from .. import queries_folder
from . import rules, synthetic

FOLDER = Path(__file__).resolve().parent

RULES = Rules(
    name="example",
    title="Example University (an example, modeled on UC Berkeley's loader)",
    folder=FOLDER,
    queries=queries_folder("example"),
    person_key=rules.PERSON_KEY,
    person_key_title="campus id",
    missing_key_reason=rules.REJECTED_NO_CAMPUS_ID,
    identifier_columns=rules.IDENTIFIER_COLUMNS,
    identifier_fields=rules.IDENTIFIER_FIELDS,
    identifiers=rules.identifiers,
    staff=PatronType("staff", rules.STAFF_COLUMNS, rules.staff_fields),
    student=PatronType("student", rules.STUDENT_COLUMNS, rules.student_fields),
    create_warehouse=synthetic.create_warehouse,
    excluded=frozenset(person_keys(json.loads((FOLDER / "excluded.json").read_text("utf-8"))["campus_ids"])),
)
