#!/usr/bin/env bash
# Moving a gallery made with dlib's ResNet (the default before SFace) to SFace: the demo's gallery
# is enrolled with dlib, SFace's detector and embedder start beside dlib's, `candor gallery
# reembed --to sface` rebuilds the gallery from the stored photos and switches searches in one step.
set -euo pipefail

samples=$(cd "${1:?usage: reembed_demo.sh SAMPLES_DIR}" && pwd)
source "$(dirname "$0")/local_stack.sh" candor-reembed
search() {
  candor search "$samples/obama2.jpg" --case DEMO-2026-0002 --purpose investigation --authorisation W-2026-114
}

step "A stack on dlib's ResNet (YuNet's faces, dlib's chips), as galleries made before SFace ran"
CANDOR_DETECTOR_ENGINE=yunet CANDOR_EMBEDDER_ENGINE=dlib candor stack up >/dev/null
cat >"$data/bookings.csv" <<CSV
subject_id,image_path,source
obama,$samples/obama.jpg,demo
obama,$samples/obama3.jpg,demo
biden,$samples/biden.jpg,demo
CSV
candor gallery import "$data/bookings.csv" --quiet
for i in 0 1 2 3 4 5; do
  candor enroll "$samples/t1.jpg" --subject "t1-person-$i" --face "$i" --meta source=demo >/dev/null
done
candor gallery models
search

step "SFace's detector and embedder start beside dlib's"
candor stack add detector --set CANDOR_DETECTOR_ENGINE=sface
candor stack add embedder --set CANDOR_EMBEDDER_ENGINE=sface

step "Re-embedding the gallery into SFace from the stored photos, then the switch"
time candor gallery reembed --to sface --reason "SFace becomes the default model"
candor gallery models
search

step "The switch in the audit log"
candor audit verify
