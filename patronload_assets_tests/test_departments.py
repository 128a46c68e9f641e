import json

import pytest

from patronload_assets.domain.departments import DepartmentTableError, load_department_table
from patronload_assets.domain.load import INSTITUTION_DIR

from .conftest import REFERENCE_DIR

REFERENCE_CONFLICTS = {
    "10004533", "10004534", "10004484",  # named in the reference README and visible in the file
}  # fmt: skip


def conflicting_codes(path):
    """The codes given two different categories, found independently of the loader."""
    seen: dict[str, set[str]] = {}
    for code, category in json.loads(path.read_text(), object_pairs_hook=list):
        seen.setdefault(code, set()).add(category)
    return {code for code, categories in seen.items() if len(categories) > 1}


def test_reference_staff_table_is_refused_naming_every_conflicting_code():
    path = REFERENCE_DIR / "staff_departments.json"
    expected = conflicting_codes(path)
    assert len(expected) == 9 and expected >= REFERENCE_CONFLICTS
    with pytest.raises(DepartmentTableError) as raised:
        load_department_table(path)
    message = str(raised.value)
    assert "9 code(s)" in message
    for code in expected:
        assert code in message
    assert "10004533: CA / QP" in message


def test_reference_student_table_loads_with_none_as_a_real_code():
    table = load_department_table(REFERENCE_DIR / "student_departments.json")
    assert len(table) == 67
    assert table["NONE"] == "VB"


@pytest.mark.parametrize("name", ["staff_departments.json", "student_departments.json"])
def test_shipped_tables_load(name):
    assert load_department_table(INSTITUTION_DIR / name)


def test_same_code_same_category_twice_is_not_a_conflict(tmp_path):
    path = tmp_path / "table.json"
    path.write_text('{"A": "X", "A": "X", " B ": "Y"}')
    assert load_department_table(path) == {"A": "X", "B": "Y"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "JSON object"),
        ('{"A": ', "not valid JSON"),
        ('{"A": ""}', "needs a code"),
        ('{"A": ["X"]}', "needs a code"),
    ],
)
def test_malformed_tables_get_a_clear_error(tmp_path, text, message):
    path = tmp_path / "table.json"
    path.write_text(text)
    with pytest.raises(DepartmentTableError, match=message):
        load_department_table(path)


def test_missing_table_names_its_path(tmp_path):
    with pytest.raises(DepartmentTableError, match="cannot read department table"):
        load_department_table(tmp_path / "absent.json")
