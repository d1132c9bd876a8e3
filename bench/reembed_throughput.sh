#!/usr/bin/env bash
# What `candor gallery reembed --to sface` costs: a gallery of the shared sets' colour and Yale
# photos is imported with dlib's ResNet, SFace's detector and embedder start beside dlib's, and the
# re-embedding is timed (photos read back from the photo store, detected, embedded, enrolled).
#   bench/reembed_throughput.sh [SHARED_DATASETS]   (from the repository root, after make setup)
set -euo pipefail
shared=$(cd "${1:-../shared/datasets}" && pwd)
export PATH="$PWD/.venv/bin:$PATH"
source scripts/local_stack.sh candor-reembed-bench
gallery="$data/gallery"
for set in deepface_unit face_recognition_examples yalefaces; do
  for person in "$shared/$set"/*/; do
    mkdir -p "$gallery/$set.$(basename "$person")"
    cp "$person"* "$gallery/$set.$(basename "$person")/"
  done
done
CANDOR_DETECTOR_ENGINE=yunet CANDOR_EMBEDDER_ENGINE=dlib candor stack up >/dev/null
candor gallery import "$gallery" --quiet | sed -n '1,/rejected/p'
candor stack add detector --set CANDOR_DETECTOR_ENGINE=sface
candor stack add embedder --set CANDOR_EMBEDDER_ENGINE=sface
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s%N)
candor gallery reembed --to sface --reason "benchmark" --leave-out-missing --quiet
echo "re-embedding took $(( ($(date +%s%N) - start) / 1000000 )) ms"
candor gallery models
