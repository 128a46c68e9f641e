"""The XML Alma receives: valid against its schema, and shaped as docs/patron-rules.md §3-§5, §8 say."""

import datetime as dt
import re
import zipfile
from collections import Counter

import pytest
import xmltodict
from lxml import etree

from patronload_assets.domain import alma_xml, checks
from patronload_assets.domain import institution as engine
from patronload_assets.domain.alma_xml import TemplateError, UserTemplate
from patronload_assets.domain.load import Institution, build_zips
from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import rules, synthetic

from .conftest import assert_valid_users, staff_row, student_row

MOMENT = dt.datetime(2026, 11, 28, 10, 30, 5, tzinfo=dt.UTC)


def build(tmp_path, patron_type, rows):
    """Rows of one type through the domain, as the assets call it; returns (result, zip bytes)."""
    institution = Institution.load(MIT)
    selection = engine.select_patrons(
        [row["KRB_NAME_UPPERCASE"] for row in rows], MIT, duplicate_reason="dup"
    )
    kept = [rows[position] for position in selection.kept]
    return build_zips(kept, len(kept), patron_type, institution, MOMENT, tmp_path)


def read_zip(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def synthetic_rows(patron_type, count):
    columns = patron_type.columns
    generate = (
        synthetic.staff_rows(count) if patron_type is MIT.staff else synthetic.student_rows(count, 2000)
    )
    return [dict(zip(columns, row, strict=True)) for row in generate]


@pytest.mark.parametrize("patron_type", [MIT.staff, MIT.student], ids=["staff", "student"])
def test_every_synthetic_user_is_valid_against_almas_schema(tmp_path, users_schema, patron_type):
    result = build(tmp_path, patron_type, synthetic_rows(patron_type, 3000))
    [packaged] = result.zips
    assert packaged.name == f"{patron_type.name}_2026-11-28_10.30.05.zip"
    files = read_zip(packaged.path)
    assert list(files) == [f"{patron_type.name}_2026-11-28_10.30.05.xml"]
    xml = files[packaged.xml_files[0]]
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<users>')
    document = assert_valid_users(users_schema, xml)
    assert len(document) == result.patrons > 2800
    for contact_info in document.iter("contact_info"):
        assert [child.tag for child in contact_info] == ["addresses", "emails", "phones"]
    assert not document.xpath("//value[not(normalize-space())]"), "an identifier without a value"
    with zipfile.ZipFile(packaged.path) as archive:
        assert archive.getinfo(packaged.xml_files[0]).compress_type == zipfile.ZIP_DEFLATED


def render(template_name, fields_of, row, repairs=None):
    template = UserTemplate.from_file(MIT.folder / template_name)
    run = engine.RunContext(dt.date(2026, 11, 28), {"10000948": "NK"}, {"6": "UH"})
    xml = template.render(fields_of(row, run), repairs if repairs is not None else Counter())
    return xmltodict.parse(xml)["user"]


def test_staff_record_with_every_value():
    user = render(
        "staff_template.xml",
        rules.staff_fields,
        staff_row(
            MIT_ID="912345678",
            EMAIL_ADDRESS="jdoe@example.edu",
            LIBRARY_ID="39080012",
            OFFICE_ADDRESS="77-123",
            OFFICE_PHONE="6172531000",
            LIBRARY_PERSON_TYPE_CODE="01",
            LIBRARY_PERSON_TYPE="Faculty",
            ORG_UNIT_ID="10000948",
            ORG_UNIT_TITLE="Libraries",
        ),
    )
    assert user["primary_id"] == "JDOE@MIT.EDU"
    assert user["user_group"] == {"@desc": "Faculty", "#text": "01"}
    assert user["expiry_date"] == "2027-05-28Z" and user["purge_date"] == "2029-05-28Z"
    assert user["is_researcher"] == "false"
    address = user["contact_info"]["addresses"]["address"]
    assert (address["line1"], address["line3"], address["postal_code"]) == ("77-123", "MIT", "00000")
    assert address["address_types"]["address_type"]["#text"] == "work"
    email = user["contact_info"]["emails"]["email"]
    assert (email["@preferred"], email["email_address"]) == ("true", "jdoe@example.edu")
    assert email["email_types"]["email_type"]["#text"] == "work"
    phone = user["contact_info"]["phones"]["phone"]
    assert (phone["@preferred"], phone["phone_number"]) == ("true", "617-253-1000")
    assert phone["phone_types"]["phone_type"]["#text"] == "office"
    identifiers = user["user_identifiers"]["user_identifier"]
    assert [(i["id_type"]["#text"], i["id_type"]["@desc"], i["value"]) for i in identifiers] == [
        ("02", "MIT ID", "912345678"),
        ("01", "Barcode", "39080012"),
    ]
    statistic = user["user_statistics"]["user_statistic"]
    assert statistic["statistic_category"] == {"@desc": "Libraries", "#text": "NK"}
    assert statistic["category_type"]["#text"] == "DEPT"
    role = user["user_roles"]["user_role"]
    assert (role["scope"]["#text"], role["role_type"]["#text"]) == ("01MIT_INST", "200")
    assert (user["record_type"]["#text"], user["account_type"]["#text"], user["external_id"]) == (
        "PUBLIC",
        "EXTERNAL",
        "SIS",
    )
    assert (
        user["status"]["#text"],
        user["cataloger_level"]["#text"],
        user["preferred_language"]["#text"],
    ) == (
        "ACTIVE",
        "00",
        "en",
    )


def test_missing_values_leave_segments_and_protected_codes_out():
    user = render("staff_template.xml", rules.staff_fields, staff_row(LIBRARY_ID="NONE"))
    assert user["contact_info"]["emails"] is None  # <emails/>
    assert user["contact_info"]["phones"] is None  # <phones/>
    assert user["user_identifiers"] is None  # no MIT ID, barcode NONE
    for absent in ("user_group", "user_title", "job_category", "campus_code", "status_date"):
        assert absent not in user
    assert user["contact_info"]["addresses"]["address"]["line1"] == rules.NO_ADDRESS
    statistic = user["user_statistics"]["user_statistic"]["statistic_category"]
    assert statistic == {"@desc": "Unknown", "#text": "ZQ"}


def test_only_the_barcode_left_out_keeps_the_mit_id():
    user = render("staff_template.xml", rules.staff_fields, staff_row(MIT_ID="912345678"))
    identifier = user["user_identifiers"]["user_identifier"]
    assert (identifier["id_type"]["#text"], identifier["value"]) == ("02", "912345678")


def test_student_record():
    user = render(
        "student_template.xml",
        rules.student_fields,
        student_row(
            TERM_STREET1="1 Main St",
            TERM_CITY="Cambridge",
            OFFICE_PHONE="6170000001",
            TERM_PHONE1="6170000002",
            STUDENT_YEAR="G",
            HOME_DEPARTMENT="6",
        ),
    )
    assert "is_researcher" not in user and "status_date" not in user
    assert user["user_group"] == "32"
    address = user["contact_info"]["addresses"]["address"]
    assert (address["line1"], address["line3"], address["city"]) == ("1 Main St", None, "Cambridge")
    phones = user["contact_info"]["phones"]["phone"]
    assert [
        (p["@preferred"], p["phone_number"], p["phone_types"]["phone_type"]["#text"]) for p in phones
    ] == [
        ("true", "617-000-0001", "office"),
        ("false", "617-000-0002", "home"),
    ]
    assert user["user_statistics"]["user_statistic"]["statistic_category"]["#text"] == "UH"


def test_student_without_a_user_group_has_no_user_group_element():
    assert "user_group" not in render("student_template.xml", rules.student_fields, student_row())


def test_values_are_escaped_and_cut_to_the_schema_length(users_schema):
    repairs = Counter()
    name = 'Ann & <Bo> "C"' + "x" * 300
    template = UserTemplate.from_file(MIT.folder / "staff_template.xml")
    run = engine.RunContext(dt.date(2026, 11, 28), {}, {})
    fields = rules.staff_fields(
        staff_row(LEGAL_FIRST_NAME=name, LIBRARY_PERSON_TYPE="A & B", LIBRARY_PERSON_TYPE_CODE="01"), run
    )
    xml = template.render(fields, repairs)
    user = assert_valid_users(users_schema, b"<users>" + xml + b"</users>")[0]
    assert user.findtext("first_name") == name[:255]
    assert user.find("user_group").get("desc") == "A & B"
    assert repairs[alma_xml.REPAIR_TRUNCATED] == 1


def test_primary_id_suffix_counts_against_the_limit():
    repairs = Counter()
    template = UserTemplate.from_file(MIT.folder / "staff_template.xml")
    run = engine.RunContext(dt.date(2026, 11, 28), {}, {})
    xml = template.render(rules.staff_fields(staff_row(KRB_NAME_UPPERCASE="K" * 300), run), repairs)
    primary_id = etree.fromstring(xml).findtext("primary_id")
    assert len(primary_id) == 255 and primary_id.endswith("@MIT.EDU")


def test_contact_info_is_written_in_schema_order_whatever_the_template_order():
    template = UserTemplate(
        "<user><primary_id>{id}</primary_id><contact_info>"
        "<phones><phone><phone_number>{phone}</phone_number><phone_types><phone_type>office</phone_type>"
        "</phone_types></phone></phones><emails/><addresses/></contact_info></user>"
    )
    xml = template.render({"id": "A", "phone": "1"}, Counter())
    assert xml.startswith(b"<user><primary_id>A</primary_id>")
    assert [child.tag for child in etree.fromstring(xml).find("contact_info")] == [
        "addresses",
        "emails",
        "phones",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("<user><a>", "not well-formed"), ("<users/>", "root"), ("<user><a>x<b/></a></user>", "mixes")],
)
def test_unusable_templates_get_a_clear_error(text, message):
    with pytest.raises(TemplateError, match=message):
        UserTemplate(text)


XS = "{http://www.w3.org/2001/XMLSchema}"


def xsd_facts():
    """From the project's schema: each element's type name, and each named type's length limits."""
    tree = etree.parse(str(checks.PROJECT_XSD))
    element_types = {}
    for element in tree.iter(f"{XS}element"):
        element_types.setdefault(element.get("name"), element.get("type"))
    bases, max_lengths, min_lengths = {}, {}, {}
    for named in tree.iter(f"{XS}simpleType", f"{XS}complexType"):
        for derivation in named.iter(f"{XS}restriction", f"{XS}extension"):
            bases[named.get("name")] = derivation.get("base")
            for facet, lengths in (("maxLength", max_lengths), ("minLength", min_lengths)):
                found = derivation.find(f"{XS}{facet}")
                if found is not None:
                    lengths[named.get("name")] = int(found.get("value"))

    def facet(kind, lengths):
        while kind is not None and kind not in lengths:
            kind = bases.get(kind)
        return lengths.get(kind)

    return element_types, lambda kind: facet(kind, max_lengths), lambda kind: facet(kind, min_lengths)


def test_writer_knows_the_schema_it_relies_on():
    """The writer's facts (lengths, what is left out when empty) agree with the project's schema."""
    element_types, max_length, min_length = xsd_facts()
    date_or_boolean = {name for name, kind in element_types.items() if kind in ("xs:date", "xs:boolean")}
    assert date_or_boolean <= alma_xml.OMIT_WHEN_EMPTY
    for code in alma_xml.PROTECTED_CODES:
        assert min_length(element_types[code]) == 1, code  # never sent empty
    templates = [(MIT.folder / f"{name}_template.xml").read_text() for name in ("staff", "student")]
    leaves = {name for text in templates for name in re.findall(r"<(\w+)(?: [^>]*)?>\{", text)}
    assert {"first_name", "line1", "value", "statistic_category"} <= leaves
    for leaf in leaves - date_or_boolean:
        expected = max_length(element_types[leaf])
        assert alma_xml.MAX_LENGTH.get(leaf, alma_xml.DEFAULT_MAX_LENGTH) == expected, leaf
    assert max_length(element_types["line1"]) is None
    assert max_length("text4000") == alma_xml.ATTRIBUTE_MAX_LENGTH
    for list_element in (
        "addresses",
        "emails",
        "phones",
        "user_identifiers",
        "user_statistics",
        "user_roles",
    ):
        assert list_element in alma_xml.LIST_ELEMENTS
