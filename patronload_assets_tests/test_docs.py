"""docs/patron-rules.md is kept true with the code: each value a section names is the code's."""

import re
import subprocess
from collections.abc import Iterable, Mapping

import pytest

from patronload_assets.alma import api, now, verdict
from patronload_assets.domain import (
    alma_jobs,
    alma_xml,
    changes,
    checks,
    institution,
    named,
    packaging,
    values,
)
from patronload_assets.institutions.mit import rules
from patronload_assets.load import retries, timing
from patronload_assets.reports import emails

from .conftest import PROJECT_DIR

RULES_DOCUMENT = PROJECT_DIR / "docs" / "patron-rules.md"
MODULES = {
    "rules": rules, "institution": institution, "values": values, "packaging": packaging,
    "alma_xml": alma_xml, "checks": checks,
    "timing": timing, "changes": changes, "emails": emails, "alma_jobs": alma_jobs, "api": api,
    "verdict": verdict, "now": now, "named": named, "retries": retries,
}  # fmt: skip
# | what the rule is | `value` `value` ... | `module.NAME` |
CONSTANT_ROW = re.compile(r"^\| [^|]+ \| ((?:`[^`]*` ?)+) \| `(\w+)\.([\w.]+)` \|$", re.MULTILINE)


def named_constants() -> list[tuple[str, list[str], object]]:
    found = []
    for match in CONSTANT_ROW.finditer(RULES_DOCUMENT.read_text(encoding="utf-8")):
        written = re.findall(r"`([^`]*)`", match[1])
        target = MODULES[match[2]]
        for part in match[3].split("."):
            target = target[part] if isinstance(target, Mapping) else getattr(target, part)
        found.append((f"{match[2]}.{match[3]}", written, target))
    return found


def test_the_document_names_the_rule_constants():
    names = {name for name, _, _ in named_constants()}
    assert len(names) >= 30
    for expected in (
        "rules.STAFF_UNKNOWN_DEPARTMENT", "rules.STUDENT_UNKNOWN_DEPARTMENT", "rules.UNDERGRADUATE",
        "rules.GRADUATE", "rules.CROSS_REGISTERED", "rules.EXPIRY_MONTHS", "rules.PURGE_MONTHS",
        "packaging.AlmaLimits.max_zips_per_load", "values.REPAIR_WHITESPACE",
    ):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize(
    ("name", "written", "value"), named_constants(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_value_in_the_document_is_the_codes(name, written, value):
    if isinstance(value, str | int | float):
        assert written == [str(value)], name
    elif isinstance(value, tuple | list):
        assert written == [str(item) for item in value], name  # order matters (columns, contact_info)
    else:
        assert isinstance(value, Iterable)
        assert sorted(written) == sorted(str(item) for item in value), name


def test_sections_the_code_points_to_exist():
    headings = set(re.findall(r"^## (\d+)\. ", RULES_DOCUMENT.read_text(encoding="utf-8"), re.MULTILINE))
    cited = set()
    for path in (PROJECT_DIR / "patronload_assets").rglob("*.py"):
        cited |= set(re.findall(r"patron-rules\.md[^\n]*?§(\d+)", path.read_text(encoding="utf-8")))
    assert cited and cited <= headings, cited - headings


def test_nothing_in_the_repository_reaches_outside_it():
    """The project carries what it needs: no file names a folder beside the clone."""
    outside = "../" + "shared"  # spelled in two parts, so this file does not name it
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_DIR, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if not tracked:  # not a git checkout: every file below the project
        tracked = [
            str(path.relative_to(PROJECT_DIR)) for path in PROJECT_DIR.rglob("*") if ".venv" not in path.parts
        ]
    named = []
    for name in tracked:
        path = PROJECT_DIR / name
        if path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_bytes().decode("utf-8", errors="replace")
            if outside in text or "shared/" + "spec" in text or "shared/" + "alma" in text:
                named.append(name)
    assert len(tracked) > 30 and named == []
