#!/usr/bin/env bash
# Apply, after the merge, the plans reviewed in the pull request: every
# ${PLANS_DIR:-plans}/NAME.json that `plan-all.sh` saved, against target NAME of
# ${TARGETS_FILE:-targets.yaml}, with $BAO_TOKEN_NAME (else $BAO_TOKEN).
#
# `apply PLAN.json` makes each plan again from the desired-state file it names and the
# server's state, and applies it only when nothing moved since the review; otherwise it
# changes nothing and says to plan again. The result of each target goes to
# ${PLANS_DIR:-plans}/NAME.result.json (schemas/apply.schema.json).
# Exit 0 when every target converged; 1 otherwise (the other targets are still applied).
set -uo pipefail

plans=${PLANS_DIR:-plans}
targets=${TARGETS_FILE:-targets.yaml}
status=0
shopt -s nullglob
saved=()
for plan in "$plans"/*.json; do
  case "$plan" in *.result.json) continue ;; esac
  saved+=("$plan")
done
if [ ${#saved[@]} -eq 0 ]; then
  echo "no saved plans in $plans/: nothing reviewed, nothing applied" >&2
  exit 1
fi
for plan in "${saved[@]}"; do
  name=$(basename "$plan" .json)
  token_var="BAO_TOKEN_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
  token=${!token_var:-${BAO_TOKEN:-}}
  echo "== $name ($plan)" >&2
  if ! BAO_TOKEN=$token reconciler apply "$plan" --target "$name" --targets "$targets" \
    --yes --json --lock-timeout "${LOCK_TIMEOUT:-5m}" > "$plans/$name.result.json"; then
    status=1
  fi
done
exit $status
