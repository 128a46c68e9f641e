"""MIT Libraries: the rules of docs/patron-rules.md (``rules.py``), the templates of its staff and
student records, its department tables (JSON), and the synthetic warehouse of the embedded
default (``synthetic.py``)."""
