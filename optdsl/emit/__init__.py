"""Stage 5: IR -> source. One module per backend; op forms come from builtins.OPS."""
