"""How work runs: the task model, the Dask runner, and the local workers forked from a warm server."""
