"""Accuracy and demographic-difference evaluation, and threshold calibration, for face models."""

from candor_eval.dataset import Dataset, LabelledImage, Pair, load_dataset
from candor_eval.embedding import CandorPipeline, Embedded, PlainDlib, embed_all
from candor_eval.evaluate import curves, summarise
from candor_eval.report import write_report

__all__ = [
    "CandorPipeline",
    "Dataset",
    "Embedded",
    "LabelledImage",
    "Pair",
    "PlainDlib",
    "curves",
    "embed_all",
    "load_dataset",
    "summarise",
    "write_report",
]
