import dagster as dg

from .assets import GROUP
from .resources import Warehouse

patronload_job = dg.define_asset_job(
    "patronload_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="The whole load: both warehouse views to both zips in the bucket.",
)


@dg.op(description="Connects to the warehouse and reads its version; touches nothing else.")
def connect_to_warehouse(context: dg.OpExecutionContext, warehouse: Warehouse) -> None:
    product, version = warehouse.server_version()
    context.log.info(f"Successfully connected to {product} version: {version}")


@dg.job(
    description="The operators' check of the warehouse connection (e.g. after the yearly password change)."
)
def warehouse_connection_test():
    connect_to_warehouse()
