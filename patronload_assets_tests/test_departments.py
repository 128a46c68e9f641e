import json

import pytest

from patronload_assets.domain.departments import DepartmentTableError, load_department_table
from patronload_assets.institutions.mit import RULES as MIT

from .conftest import FIXTURES

CONFLICTING_TABLE = FIXTURES / "staff_departments_conflicting.json"


def conflicting_codes(path):
    """The codes given two different categories, found independently of the loader."""
    seen: dict[str, set[str]] = {}
    for code, category in json.loads(path.read_text(), object_pairs_hook=list):
        seen.setdefault(code, set()).add(category)
    return {code for code, categories in seen.items() if len(categories) > 1}


def test_a_table_giving_codes_two_categories_is_refused_naming_every_such_code():
    expected = conflicting_codes(CONFLICTING_TABLE)
    assert expected == {"10004533", "10004534", "10002466"}  # 10001100 repeats one category: no conflict
    with pytest.raises(DepartmentTableError) as raised:
        load_department_table(CONFLICTING_TABLE)
    message = str(raised.value)
    assert "3 code(s)" in message
    for code in expected:
        assert code in message
    assert "10004533: CA / QP" in message
    assert "10001100" not in message


def test_none_is_a_real_code_in_a_student_table():
    table = load_department_table(FIXTURES / "student_departments_with_none.json")
    assert len(table) == 6
    assert table["NONE"] == "VB"


@pytest.mark.parametrize("name", ["staff_departments.json", "student_departments.json"])
def test_shipped_tables_load(name):
    assert load_department_table(MIT.folder / name)


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
