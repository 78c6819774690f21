"""The commands that write an output directory: build, dedup-only, adopt, align, index. Each composes stages on a runner and writes through one OutputDir."""
