"""Checks of a dataset's files against their formats and each other (verify), used by verify and by adopt on its inputs."""
