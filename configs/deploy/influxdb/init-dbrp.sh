#!/bin/sh
# Runs once, after InfluxDB 2's initial setup: map the InfluxQL database "machinewatch" (retention
# policy "autogen") to the bucket, so Grafana's InfluxQL datasource can query it via /query.
set -eu
BUCKET_ID=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | cut -f1)
influx v1 dbrp create --db machinewatch --rp autogen --bucket-id "${BUCKET_ID}" --default
