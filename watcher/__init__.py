"""thumbgen: turns product photos dropped in a shared folder into marketplace thumbnails."""

__version__ = "0.1.0"
