"""Candor's reviewer web app: the review desk for reviewers, supervisors and auditors."""

from candor_review.app import create_app
from candor_review.settings import ReviewSettings

__all__ = ["ReviewSettings", "create_app"]
