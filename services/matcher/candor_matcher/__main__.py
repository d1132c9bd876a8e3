"""``python -m candor_matcher``."""

from candor_kit import run_service
from candor_matcher.service import MatcherSettings, serve

if __name__ == "__main__":
    run_service("matcher", MatcherSettings.from_env, serve)
