"""The exit codes every command keeps: 0 done, 1 failed, 2 a bad configuration."""

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
