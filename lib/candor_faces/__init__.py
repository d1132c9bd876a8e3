"""Candor's face pipeline: decoding with limits, finding faces, aligned chips, quality and embedding.

The detector and embedder services are transports around it, and `candor eval`, `candor
calibrate` and the benchmarks call the same code, so the evaluation measures exactly what serves.
Modules: ``decoding`` (photos in, with limits), ``faces`` (dlib chips: finders, landmarks,
quality), ``yunet`` (OpenCV Zoo's detector), ``onnx_faces`` (a model pack's detector and ArcFace
chips), ``engines``, ``onnx_engine`` and ``dlib_onnx`` (embedding engines), ``detection`` and
``embedding`` (from a configured name to a running detector or engine). The package itself imports
nothing, so each part loads only what it needs: the embedder never loads the detectors.
"""
