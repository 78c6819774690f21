"""The commands that write an output directory: build, dedup-only, adopt, align, compare, index,
schedule. Each composes stages on a runner and writes through one OutputDir."""
