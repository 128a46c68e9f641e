"""The resources: one module per role (warehouse, bucket, institution, mail), production or embedded,
and whether a call to a dependency may pass (faults). Which a deployment gets: settings.py."""
