"""Accuracy and demographic-difference evaluation, and threshold calibration, for face models."""

from candor_eval.dataset import Dataset, LabelledImage, Pair, load_dataset
from candor_eval.embedding import CandorPipeline, Embedded, PipelineSpec, PlainDlib, embed_all, embed_parallel
from candor_eval.evaluate import curves, summarise
from candor_eval.report import write_report

__all__ = [
    "CandorPipeline",
    "Dataset",
    "Embedded",
    "LabelledImage",
    "Pair",
    "PipelineSpec",
    "PlainDlib",
    "curves",
    "embed_all",
    "embed_parallel",
    "load_dataset",
    "summarise",
    "write_report",
]
