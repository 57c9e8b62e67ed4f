#!/usr/bin/env bash
# Nightly smearscan run: one dated report, JSON log lines, smearscan's own exit code.
#
# Used by smearscan-nightly.service (systemd does not expand date patterns such
# as %Y in ExecStart) and by crontab.example. Settings come from the
# environment (the service's Environment= lines, or cron's):
#
#   SMEARSCAN      the smearscan executable   (default: smearscan on PATH)
#   SLIDES_DIR     folder of slides to read    (default: /data/slides)
#   REPORTS_DIR    where dated reports go      (default: /data/reports)
#   SMEARSCAN_CONFIG  optional --config TOML file (see smearscan.toml.example)
#   LEDGER         run ledger shared across nights (default: $REPORTS_DIR/ledger.sqlite;
#                  empty: the ledger beside each night's report, so nothing is
#                  shared and every night processes every slide): slides done on
#                  an earlier night are not run again
#   SINCE          --since for the report (e.g. 26h: the slides of about the last
#                  night only); default empty: every slide of SLIDES_DIR
#
# Any arguments are passed on to `smearscan process` (e.g. --quiet,
# --scheduler tcp://dask-head:8786). The report of day D is
# $REPORTS_DIR/D/smearscan-D.xlsx, with its .zarr, _cells.parquet, _previews/
# and .log (JSON lines) beside it. Running twice on one day overwrites that
# day's report.
#
# Exit codes are smearscan's: 0 all ok, 1 some slides failed, 2 usage or
# configuration error (also: this script could not create the report folder),
# 3 another run holds the output's or the ledger's lock, 4 no slide found (see README "Nightly use").
set -euo pipefail

SMEARSCAN="${SMEARSCAN:-smearscan}"
SLIDES_DIR="${SLIDES_DIR:-/data/slides}"
REPORTS_DIR="${REPORTS_DIR:-/data/reports}"
SMEARSCAN_CONFIG="${SMEARSCAN_CONFIG:-}"
LEDGER="${LEDGER-${REPORTS_DIR}/ledger.sqlite}"

day="$(date +%Y-%m-%d)"
out_dir="${REPORTS_DIR}/${day}"
if ! mkdir -p -- "${out_dir}"; then
    echo "nightly.sh: cannot create ${out_dir}" >&2
    exit 2
fi

args=(process "${SLIDES_DIR}" --out "${out_dir}/smearscan-${day}.xlsx" --log-format json)
if [[ -n "${SMEARSCAN_CONFIG}" ]]; then
    args+=(--config "${SMEARSCAN_CONFIG}")
fi
if [[ -n "${LEDGER}" ]]; then
    args+=(--ledger "${LEDGER}")
fi
if [[ -n "${SINCE:-}" ]]; then
    args+=(--since "${SINCE}")
fi

# exec: the exit code (and signals from systemd/cron) are smearscan's own.
exec "${SMEARSCAN}" "${args[@]}" "$@"
