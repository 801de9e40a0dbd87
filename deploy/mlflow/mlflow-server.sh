#!/bin/sh
# Starts the MLflow tracking server raybm's clusters log to: a SQL backend (PostgreSQL) for
# runs and metrics, artifacts proxied through the server to an object store, so that clients
# need only the server's http:// URI and never hold the store's credentials.
#
# One start-up command for every place that runs this server: the `mlflow` service of
# deploy/mlflow/compose.yaml and the `server` tests (tests/servers.py), so what the tests
# exercise is what a cluster gets.
#
# Settings, from the environment:
#   MLFLOW_BACKEND_STORE_URI      required, e.g. postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB
#   MLFLOW_ARTIFACTS_DESTINATION  required, e.g. s3://BUCKET/mlartifacts (the S3 endpoint and
#                                 keys come from MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)
#   MLFLOW_HOST                   interface to listen on (default 127.0.0.1; 0.0.0.0 in a container)
#   MLFLOW_PORT                   default 5000
#   MLFLOW_WORKERS                server worker processes (default 4)
#   MLFLOW_ALLOWED_HOSTS          Host headers to accept, comma-separated, wildcards allowed
#                                 (default: MLflow's, localhost and private IPs). Set it to every
#                                 name clients use, e.g. mlflow,mlflow:5000,localhost:*
#   MLFLOW_PYTHON                 the Python that has mlflow (default: python)
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?must be set, e.g. postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?must be set, e.g. s3://BUCKET/mlartifacts}"

set -- \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-4}"
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
    set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi

# exec: the server becomes this process, so a container's or a test's stop signal reaches it.
exec "${MLFLOW_PYTHON:-python}" -m mlflow server "$@"
