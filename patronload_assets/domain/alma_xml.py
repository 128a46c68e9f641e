"""Alma user XML: institution templates compiled into a fast record writer (docs/patron-rules.md §8).

A template is an institution-editable ``<user>`` document (read with xmltodict). Text or an
attribute may hold placeholders, ``{first_name}``, filled from a record's fields. Rendering rules,
all of them Alma's schema and not the institution's:

- a placeholder whose value is ``None`` leaves out its segment (an email, phone, identifier, ...:
  any child of a list element such as ``emails``) or, outside a segment, its element;
- a list element left with no segments is written empty (``<emails/>``);
- code fields Alma protects from overwrite, dates and booleans are left out when they have no
  value (an empty ``xs:date`` or ``xs:boolean`` is invalid; an empty code would blank Alma's);
- ``contact_info`` children are written in the schema's order: addresses, emails, phones;
- a value longer than its element's schema limit is cut to it and counted.

xmltodict builds and unparses dictionaries at about 3,000 records/s here; the template is read
with xmltodict once and compiled into straight-line Python that appends static strings and the
record's values, an order of magnitude faster.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import xmltodict

from .changes import GROUPS, Fingerprints, group_of

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
USERS_OPEN, USERS_CLOSE = "<users>\n", "</users>\n"

# Alma's user schema (rest_user.xsd) facts the writer relies on; a test checks them against it.
LIST_ELEMENTS = frozenset(
    {
        "addresses",
        "emails",
        "phones",
        "user_identifiers",
        "user_roles",
        "user_blocks",
        "user_notes",
        "user_statistics",
        "proxy_for_users",
        "rs_libraries",
        "library_notices",
        "address_types",
        "email_types",
        "phone_types",
        "parameters",
    }
)
PROTECTED_CODES = ("user_group", "job_category", "user_title", "campus_code", "preferred_language")
DATE_ELEMENTS = ("birth_date", "expiry_date", "purge_date", "status_date", "last_patron_activity_date",
                 "start_date", "end_date")  # fmt: skip
BOOLEAN_ELEMENTS = ("is_researcher", "user_viewable", "popup_note")
# Code fields Alma protects from overwrite (an empty one would blank Alma's value), and elements
# whose schema type has no empty value.
OMIT_WHEN_EMPTY = frozenset((*PROTECTED_CODES, *DATE_ELEMENTS, *BOOLEAN_ELEMENTS))
CONTACT_INFO_ORDER = ("addresses", "emails", "phones")
DEFAULT_MAX_LENGTH = 255
MAX_LENGTH = {
    "line1": None,  # xs:string, no limit
    "full_name": 600,
    "address_note": 1000,
    "note": 2000,
    "force_password_change": 4,
}
ATTRIBUTE_MAX_LENGTH = 4000  # every desc attribute is string4000Length

REPAIR_TRUNCATED = "values_cut_to_schema_length"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TEXT_SPECIAL = re.compile(r"[&<>\r]")
_ATTRIBUTE_SPECIAL = re.compile(r'[&<>"\r\n\t]')
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}


def _escape(value: str, special: re.Pattern) -> str:
    if special.search(value) is None:
        return value
    return special.sub(lambda match: _ESCAPES[match.group()], value)


def _fix(value: str, limit: int | None, special: re.Pattern, repairs: Counter) -> str:
    """A value cut to its element's schema length (counted), then escaped."""
    if limit is not None and len(value) > limit:
        value = value[:limit]
        repairs[REPAIR_TRUNCATED] += 1
    return _escape(value, special)


class TemplateError(ValueError):
    """An institution template the writer cannot use."""


# Compiled nodes: plain tuples, the first item says which kind, for a quick render loop.
_STATIC, _SLOT, _GUARDED, _LIST, _GROUP = range(5)


class UserTemplate:
    """One patron type's ``<user>`` template, compiled once, rendered per record."""

    def __init__(self, xml_text: str, source: str = "template"):
        try:
            document = xmltodict.parse(xml_text)
        except Exception as error:  # expat raises its own error type
            raise TemplateError(f"{source} is not well-formed XML: {error}") from error
        if list(document) != ["user"]:
            raise TemplateError(f"{source} must have <user> as its root element")
        self.source = source
        self.fields: set[str] = set()
        self._limits: list[int] = []
        nodes = _merge(self._element("user", document["user"], in_segment=False, parent=""))
        # A record whose values together are no longer than the shortest limit has none to cut.
        self._render = _compile(nodes, source, shortest=min(self._limits, default=1 << 30))

    @classmethod
    def from_file(cls, path: str | Path) -> UserTemplate:
        return cls(Path(path).read_text(encoding="utf-8"), source=str(path))

    # -- compiling --------------------------------------------------------------------------

    def _element(self, name: str, content: object, *, in_segment: bool, parent: str) -> list:
        """Nodes for one element (content as xmltodict gives it); a field group's element, or the
        primary id, marked so the render digests what it wrote (docs/patron-rules.md §11)."""
        nodes = self._element_nodes(name, content, in_segment=in_segment)
        group = group_of(parent, name)
        return nodes if group is None else [(_GROUP, group, _merge(nodes))]

    def _element_nodes(self, name: str, content: object, *, in_segment: bool) -> list:
        attributes: list[tuple[str, str]] = []
        children: list[tuple[str, object]] = []
        text = ""
        if isinstance(content, dict):
            for key, value in content.items():
                if key.startswith("@"):
                    attributes.append((key[1:], value or ""))
                elif key == "#text":
                    text = value
                else:
                    for item in value if isinstance(value, list) else [value]:
                        children.append((key, item))
        elif content is not None:
            text = content
        if children and text.strip():
            raise TemplateError(f"{self.source}: <{name}> mixes text and elements")
        if name == "contact_info":
            rank = {child: index for index, child in enumerate(CONTACT_INFO_ORDER)}
            children.sort(key=lambda child: rank.get(child[0], len(rank)))

        nodes: list = ["<" + name]
        for attribute, value in attributes:
            nodes.append(f' {attribute}="')
            nodes += self._text(value, ATTRIBUTE_MAX_LENGTH, _ATTRIBUTE_SPECIAL)
            nodes.append('"')
        if name in LIST_ELEMENTS:
            segments = [
                [_guard(self._element(child, item, in_segment=True, parent=name))] for child, item in children
            ]
            return [(_LIST, _merge(nodes), name, segments)]
        nodes.append(">")
        text_nodes: list = []
        if children:
            for child, item in children:
                nodes += self._element(child, item, in_segment=in_segment, parent=name)
        else:
            text_nodes = self._text(text, MAX_LENGTH.get(name, DEFAULT_MAX_LENGTH), _TEXT_SPECIAL)
        nodes += text_nodes
        nodes.append(f"</{name}>")
        if name in OMIT_WHEN_EMPTY:
            if not children and not any(type(node) is tuple for node in text_nodes):
                return [] if not text.strip() else nodes  # fixed in the template
            return [_guard(nodes, non_empty=_slot_names(text_nodes))]
        if not in_segment and not children and _slot_names(nodes):
            return [_guard(nodes)]
        return nodes

    def _text(self, text: str, limit: int | None, special: re.Pattern) -> list:
        """Static pieces and slots of a text with placeholders."""
        pieces = _PLACEHOLDER.split(text)
        statics, names = pieces[0::2], pieces[1::2]
        for name in names:
            self.fields.add(name)
        if limit is not None and names:
            limit = max(0, (limit - sum(map(len, statics))) // len(names))
            self._limits.append(limit)
        nodes: list = []
        for index, static in enumerate(statics):
            if static:
                nodes.append(_escape(static, special))
            if index < len(names):
                nodes.append((_SLOT, names[index], limit, special))
        return nodes

    # -- rendering --------------------------------------------------------------------------

    def render(
        self, fields: Mapping[str, str | None], repairs: Counter, fingerprints: Fingerprints | None = None
    ) -> bytes:
        """One ``<user>`` element for ``fields``, UTF-8; cut values are counted in ``repairs``, the
        user's primary id and group digests added to ``fingerprints``."""
        return self._render(fields, repairs, Fingerprints() if fingerprints is None else fingerprints)


def _slot_names(nodes: list) -> tuple[str, ...]:
    return tuple(sorted({node[1] for node in nodes if type(node) is tuple and node[0] == _SLOT}))


def _guard(nodes: list, *, non_empty: tuple[str, ...] = ()) -> tuple:
    """Nodes written only when each of their own placeholders has a value, and those in
    ``non_empty`` a non-empty one (nested optional parts carry guards of their own)."""
    return (_GUARDED, _slot_names(nodes), non_empty, _merge(nodes))


def _merge(nodes: list) -> list:
    """Join neighbouring static strings, so rendering appends as few pieces as possible, and
    neighbouring elements of one field group, so it digests them in one go."""
    merged: list = []
    for node in nodes:
        if type(node) is str and merged and type(merged[-1]) is str:
            merged[-1] += node
        elif _is_group(node) and merged and _is_group(merged[-1]) and merged[-1][1] == node[1] >= 0:
            merged[-1] = (_GROUP, node[1], _merge([*merged[-1][2], *node[2]]))
        else:
            merged.append(node)
    return merged


def _is_group(node) -> bool:
    return type(node) is tuple and node[0] == _GROUP


def _generate(nodes: list, lines: list[str], depth: int, marks: list[int], careful: bool) -> None:
    """Python statements that write ``nodes`` as UTF-8: the template becomes straight-line code.

    Neighbouring pieces go into ``o`` in one ``+=`` of a tuple: static text as bytes constants,
    values encoded; ``careful`` code first cuts and escapes each value. Everything taken from the
    template enters the source through ``repr``, and placeholder names are ``\\w+``: an
    institution's template is data, never code.
    """
    pad = "    " * depth
    run: list[str] = []

    def flush() -> None:
        if run:
            lines.append(f"{pad}o += ({', '.join(run)},)")
            run.clear()

    def piece(node) -> None:
        """Static text or a value, into the current run."""
        if type(node) is str:
            run.append(repr(node.encode("utf-8")))
            return
        _, name, limit, special = node
        if not careful:
            run.append(f"f[{name!r}].encode()")
            return
        local = f"v{len(marks)}"
        marks.append(0)
        kind = "text" if special is _TEXT_SPECIAL else "attribute"
        lines.append(f"{pad}{local} = f[{name!r}]")
        # One test for the rare cases (too long, or a character to escape); the fix is a call.
        too_long = f"len({local}) > {limit} or " if limit is not None else ""
        lines.append(f"{pad}if {too_long}{kind}_special({local}):")
        lines.append(f"{pad}    {local} = fix_{kind}({local}, {limit}, r)")
        run.append(f"{local}.encode()")

    for node in nodes:
        if type(node) is str or node[0] == _SLOT:
            piece(node)
        elif node[0] == _GROUP:  # the element's bytes, as written, into its group's digest
            flush()
            _, group, inner = node
            start = f"s{len(marks)}"
            marks.append(0)
            lines.append(f"{pad}{start} = len(o)")
            _generate(inner, lines, depth, marks, careful)
            flush()
            written = f"b''.join(o[{start}:])"
            lines.append(
                f"{pad}key = {written}" if group < 0 else f"{pad}g[{group}] = crc({written}, g[{group}])"
            )
        elif node[0] == _GUARDED:
            flush()
            _, names, non_empty, inner = node
            conditions = [f"f[{name!r}] is not None" for name in names if name not in non_empty]
            conditions += [f"f[{name!r}]" for name in non_empty]
            if conditions:
                lines.append(f"{pad}if {' and '.join(conditions)}:")
                _generate(inner, lines, depth + 1, marks, careful)
            else:
                _generate(inner, lines, depth, marks, careful)
        else:  # _LIST: "<name" + attributes, then ">" segments "</name>", or "/>" with none
            _, opening, name, segments = node
            for part in opening:
                piece(part)
            flush()
            mark = f"m{len(marks)}"
            marks.append(0)
            lines += [f"{pad}{mark} = len(o)", f"{pad}o.append(b'>')"]
            for segment in segments:
                _generate(segment, lines, depth, marks, careful)
            lines += [f"{pad}if len(o) == {mark} + 1:", f"{pad}    o[{mark}] = b'/>'", f"{pad}else:"]
            lines.append(f"{pad}    o.append({f'</{name}>'.encode()!r})")
    flush()


def _compile(nodes: list, source: str, shortest: int):
    """The render function: a fast variant for a record with no value to cut or escape (most),
    a careful one for the rest."""
    lines = []
    for name, careful in (("careful", True), ("fast", False)):
        lines += [f"def {name}(f, r, k):", "    o = []", f"    g = {[0] * len(GROUPS)!r}", "    key = b''"]
        _generate(nodes, lines, 1, [], careful)
        lines += ["    k.add(key, g)", "    return b''.join(o)"]
    lines += [
        "def render(f, r, k):",
        "    text = ''.join(filter(None, f.values()))",
        f"    if len(text) <= {shortest} and attribute_special(text) is None:",
        "        return fast(f, r, k)",
        "    return careful(f, r, k)",
    ]
    namespace = {
        "crc": zlib.crc32,
        "text_special": _TEXT_SPECIAL.search,
        "attribute_special": _ATTRIBUTE_SPECIAL.search,
        "fix_text": lambda value, limit, repairs: _fix(value, limit, _TEXT_SPECIAL, repairs),
        "fix_attribute": lambda value, limit, repairs: _fix(value, limit, _ATTRIBUTE_SPECIAL, repairs),
    }
    exec(compile("\n".join(lines), f"<template {source}>", "exec"), namespace)  # noqa: S102
    return namespace["render"]
