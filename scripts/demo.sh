#!/usr/bin/env bash
# Candor's main job on the embedded defaults: start the stack, enrol a gallery, search with a
# probe, show the candidates and the audit verification, stop the stack.
set -euo pipefail

samples=$(cd "${1:?usage: demo.sh SAMPLES_DIR}" && pwd)
source "$(dirname "$0")/local_stack.sh" candor-demo

step "Starting nats-server and the five services (data in $data)"
candor stack up

step "Bulk import of a booking manifest (the group photo is rejected: one face per booking photo)"
cat >"$data/bookings.csv" <<CSV
subject_id,image_path,source
obama,$samples/obama.jpg,demo
obama,$samples/obama3.jpg,demo
biden,$samples/biden.jpg,demo
group-photo,$samples/t1.jpg,demo
CSV
candor gallery import "$data/bookings.csv" --quiet
echo "the gallery's model (searches use it; \`candor gallery reembed --to MODEL\` changes it):"
candor gallery models

step "Enrolling each face of t1.jpg one by one"
candor faces "$samples/t1.jpg"
for i in 0 1 2 3 4 5; do
  candor enroll "$samples/t1.jpg" --subject "t1-person-$i" --face "$i" --meta source=demo
done

step "Searching with obama2.jpg for case DEMO-2026-0001 (purpose: investigation, warrant W-2026-114)"
found=$(candor search "$samples/obama2.jpg" --case DEMO-2026-0001 --purpose investigation --authorisation W-2026-114)
echo "$found"
search_id=$(sed -n 's/^search \([0-9a-f-]*\) .*/\1/p' <<<"$found")

step "A search without an allowed purpose is refused, and the refusal is audited"
if candor search "$samples/obama2.jpg" --case DEMO-2026-0001 --purpose curiosity --authorisation W-2026-114; then
  echo "unexpected: the search was not refused" >&2
  exit 1
fi

step "Two reviewers, neither of them the searcher, review the candidates blind"
rita=$(candor token issue --user rita --roles reviewer --ttl 10m)
rob=$(candor token issue --user rob --roles reviewer --ttl 10m)
CANDOR_TOKEN="$rita" candor review list
echo "rita first judges the probe alone (ACE-V's analysis: no candidate is shown before it):"
CANDOR_TOKEN="$rita" candor review analyse "$search_id" --sufficient
echo "then compares it with the candidate (a conclusion needs both photos shown, and the features it rests on):"
CANDOR_TOKEN="$rita" candor review show "$search_id" --photos "$CANDOR_DATA/review-rita"
CANDOR_TOKEN="$rita" candor review submit "$search_id" --rank 1 --decision same --features ears,eyebrows,nose
echo "after one 'same person' (the searcher's view: blind until the candidate is decided):"
candor review show "$search_id"
CANDOR_TOKEN="$rob" candor review analyse "$search_id" --sufficient >/dev/null
CANDOR_TOKEN="$rob" candor review show "$search_id" --photos "$CANDOR_DATA/review-rob" >/dev/null
CANDOR_TOKEN="$rob" candor review submit "$search_id" --rank 1 --decision same --features ears,mouth
echo "after two different reviewers concluded 'same person':"
candor review show "$search_id"

step "Verifying the audit chain"
sleep 1  # the audit service appends asynchronously from JetStream
candor audit verify

step "Today's oversight report, from the audit log alone"
today=$(date -u +%F)
candor report --from "$today" --to "$today" --out "$CANDOR_DATA/report"
sed -n '/## Searches by outcome/,/## Busiest users/p' "$CANDOR_DATA/report/report.md" | grep -v '^$' | grep -v '^!\[' | grep -v '^## Busiest'
sed -n '/## Agreement between reviewers/,$p' "$CANDOR_DATA/report/report.md" | grep -v '^$'

step "Stopping the stack"
candor stack down
