"""``python -m candor_embedder``."""

from candor_embedder.service import EmbedderSettings, serve
from candor_kit import run_service

if __name__ == "__main__":
    run_service("embedder", EmbedderSettings.from_env, serve)
