"""The warehouse queries, installed with the package as patronload_assets.sql (setup.py)."""
