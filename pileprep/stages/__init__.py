"""The build stages, each a function of files to files run as tasks: ingest, tokenize, MinHash, pack, report, and the graph that overlaps them."""
