"""`optdsl show`: a spec as math (rendered from the IR), the kind of each value, the fused path's cost, and the spec highlighted by the .opt Pygments lexer."""
