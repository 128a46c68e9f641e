# The one image of a deployment: the webserver, the daemon, the code server and every run's task
# (EcsRunLauncher) start from it with different commands. It holds a wheel install of the project
# (`pip install '.[deploy]'`, not editable): the package carries the SQL, the templates, the
# department tables and the schema, so nothing is read from a checkout.
#
#   make image                      (deploy/image/build.sh: docker or podman, BASE_IMAGE=...)
#   docker build -t patronload .
#   docker build -t patronload --build-arg ORACLE_INSTANT_CLIENT_URL=https://download.oracle.com/...zip .
#
# With ORACLE_INSTANT_CLIENT_URL (an Instant Client "Basic" or "Basic Light" zip for Linux x86-64),
# the client is unpacked to /opt/oracle/instantclient and ORACLE_LIB_DIR points there: thick mode,
# for a warehouse older than python-oracledb's thin mode supports. Without it, thin mode.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
# The label lets make image remove what earlier builds of it left untagged, and nothing else.
LABEL org.opencontainers.image.title=patronload
WORKDIR /src
COPY setup.py ./
# The dependencies' wheels first, in layers of their own: a change to the code alone rebuilds only
# the project's wheel. The package is an empty stand-in until its code is copied; what its build
# left (build/, with the empty __init__.py newer than the copied code's) goes, or it would be packed.
RUN mkdir -p patronload_assets sql && touch patronload_assets/__init__.py \
    && pip wheel --no-cache-dir --wheel-dir /deps '.[deploy]' \
    && rm -r /deps/patronload_assets-*.whl build *.egg-info patronload_assets sql
COPY patronload_assets ./patronload_assets
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /project .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=patronload
ARG ORACLE_INSTANT_CLIENT_URL=""
RUN if [ -n "$ORACLE_INSTANT_CLIENT_URL" ]; then \
        apt-get update && apt-get install -y --no-install-recommends libaio1 curl unzip \
        && curl -fsSL -o /tmp/instantclient.zip "$ORACLE_INSTANT_CLIENT_URL" \
        && mkdir -p /opt/oracle && unzip -q /tmp/instantclient.zip -d /opt/oracle \
        && mv /opt/oracle/instantclient_* /opt/oracle/instantclient \
        && echo /opt/oracle/instantclient > /etc/ld.so.conf.d/oracle-instantclient.conf && ldconfig \
        && rm /tmp/instantclient.zip && apt-get purge -y curl unzip && rm -rf /var/lib/apt/lists/*; \
    fi
ENV ORACLE_LIB_DIR=${ORACLE_INSTANT_CLIENT_URL:+/opt/oracle/instantclient}
COPY --from=build /deps /deps
RUN pip install --no-cache-dir --no-index /deps/*.whl && rm -rf /deps
COPY --from=build /project /project
RUN pip install --no-cache-dir --no-index --no-deps /project/*.whl && rm -rf /project

# The instance file every process reads (PostgreSQL, the ECS run launcher, step logs in S3), and a
# working folder of its own: the code reads nothing from it.
ENV DAGSTER_HOME=/opt/dagster/dagster_home
COPY deploy/aws/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
WORKDIR /opt/dagster/app
RUN useradd --system --uid 10001 --home-dir /opt/dagster dagster \
    && mkdir -p /opt/dagster/dagster_home/storage && chown -R dagster /opt/dagster
USER dagster

# The code server's command; the webserver (dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml
# or --grpc-host), the daemon (dagster-daemon run) and run tasks (dagster api execute_run, set by
# the run launcher) override it.
EXPOSE 4000 3000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "patronload_assets"]
