from setuptools import find_packages, setup

setup(
    name="patronload_assets",
    version="1.0.0",
    description="The daily load of staff and student records into Alma patron accounts.",
    # sql/ stays at the top for the DBA; installed, it is the package patronload_assets.sql.
    packages=[
        *find_packages(exclude=["patronload_assets_tests", "patronload_assets_tests.*"]),
        "patronload_assets.sql",
    ],
    package_dir={"patronload_assets.sql": "sql"},
    package_data={
        "patronload_assets": ["schema/*.xsd"],
        "patronload_assets.institutions": ["*/*.xml", "*/*.json"],
        "patronload_assets.sql": ["*/*.sql"],
    },
    python_requires=">=3.11",
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-aws>=0.29,<0.30",
        "oracledb>=3.0,<27",
        "pandas>=2.2,<4",
        "pyarrow>=15,<27",
        "xmltodict>=0.14,<2",
        "sentry-sdk>=2,<3",
        "lxml>=5,<7",
        "isal>=1.6,<2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",  # make test over both cores
            "moto[server,s3,ses]>=5.1,<6",
            "hypothesis>=6.100,<7",
            "dagster-webserver>=1.13,<1.14",  # dagster dev and its GraphQL client, for the daemon test
            "dagster-postgres>=0.29,<0.30",  # deploy/aws/dagster.yaml's storage, on a real PostgreSQL
            "dagster-dg-cli>=1.13,<1.14",  # dg check defs, dg launch
            "dagster-docker>=0.29,<0.30",  # DockerRunLauncher: every run a container, in make test-deployment
        ],
        "deploy": [
            "dagster-webserver>=1.13,<1.14",
            "dagster-postgres>=0.29,<0.30",
        ],
        "dev": [
            "dagster-webserver>=1.13,<1.14",
            "dagster-dg-cli>=1.13,<1.14",
            "ruff>=0.6,<1",
        ],
    },
)
