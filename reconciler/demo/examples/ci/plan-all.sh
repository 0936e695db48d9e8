#!/usr/bin/env bash
# Plan every target of the repository, for review: one desired-state file per target,
# ${CLUSTERS_DIR:-clusters}/NAME.yaml, whose address (and CA) is entry NAME of
# ${TARGETS_FILE:-targets.yaml}, and whose token is $BAO_TOKEN_NAME (upper case, "-" as "_"),
# else $BAO_TOKEN. Use a read-only token: `reconciler policy --read-only FILE`.
#
# Writes, per target, ${PLANS_DIR:-plans}/NAME.json (the saved plan `apply-all.sh` applies
# after the merge) and NAME.md (the review document the comment shows), and appends the
# documents to $GITHUB_STEP_SUMMARY when it is set.
# Exit 0 when every target was planned (changes or not); 1 when a plan failed or has errors.
set -uo pipefail

clusters=${CLUSTERS_DIR:-clusters}
plans=${PLANS_DIR:-plans}
targets=${TARGETS_FILE:-targets.yaml}
mkdir -p "$plans"
status=0
shopt -s nullglob
files=("$clusters"/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
  echo "no desired-state files in $clusters/" >&2
  exit 1
fi
for file in "${files[@]}"; do
  name=$(basename "$file" .yaml)
  token_var="BAO_TOKEN_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
  token=${!token_var:-${BAO_TOKEN:-}}
  echo "== $name ($file)" >&2
  BAO_TOKEN=$token reconciler plan "$file" --target "$name" --targets "$targets" \
    --format markdown --out "$plans/$name.json" > "$plans/$name.md" 2> "$plans/$name.log"
  code=$?
  cat "$plans/$name.log" >&2
  if [ "$code" -ne 0 ]; then
    status=1
    if [ ! -s "$plans/$name.md" ]; then
      # No plan at all (server unreachable, invalid file): the comment says why.
      {
        echo "## Reconciler plan: \`$name\`"
        echo
        echo "**Verdict: ❌ not planned** (exit $code):"
        echo
        echo '```'
        cat "$plans/$name.log"
        echo '```'
      } > "$plans/$name.md"
    fi
  fi
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat "$plans/$name.md" >> "$GITHUB_STEP_SUMMARY"
  fi
done
exit $status
