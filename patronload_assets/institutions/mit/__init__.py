"""MIT Libraries: the rules of docs/patron-rules.md (``rules.py``), the templates of its staff and
student records, and its department tables (JSON)."""
