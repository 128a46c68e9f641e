import dagster as dg

from .assets import GROUP

patronload_job = dg.define_asset_job(
    "patronload_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="The whole load: both warehouse views to both zips in the bucket.",
)
