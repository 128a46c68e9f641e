"""Alma's side of the load (docs/patron-rules.md §12): its APIs, the verdict of its SIS job on each
load, and the first-day check of the key. Present only with ALMA_API_KEY set."""
