"""What the program generator (optdsl.fuzz.programs) draws names and hyper values from."""

# (value, lo, hi) families for hypers
HYPER_FAMILIES = {
    "rate": (0.01, 0.001, 0.1),
    "beta": (0.9, 0.5, 0.999),
    "eps": (1e-8, 1e-10, 1e-3),
    "coef": (0.5, 0.0, 2.0),
    "negative": (-0.5, -1.0, -0.1),
    "decay": (0.01, 0.0, 0.2),
}
BETA_DEFAULTS = (0.9, 0.99, 0.999, 0.5, 0.95)

# names generated code uses itself (template locals, imports, builtins) or derives from a spec's
# others (`s0_ptrs`, `s0s`, `hb0_0`): a spec may take any of them (generated code renames its own),
# and nothing may change. (As many as before the renaming: the draws, and so the programs, stay
# those of the CI slice; only their names change.)
NAME_POOL = ("rows", "streams", "index", "view", "copies", "numels", "ptrs", "head", "table", "inputs",
             "hypers", "states", "stored", "func", "per_tensor", "steps", "original_params", "kernels",
             "reason", "active", "value", "t", "p", "x", "i", "j", "mask", "offs", "pid", "self", "torch",
             "tl", "math", "params", "grads", "state_steps", "block", "capturable", "foreach", "defaults",
             "super", "n_columns", "work_tensor", "step_t", "s0_ptrs", "has_s0", "s0_dtype", "s0s", "s0_list",
             "s0_new", "s0_part", "hb0_0", "v1_ptrs", "h1", "size0", "max", "min", "len", "sum", "abs", "str",
             "dict", "list", "bool", "any", "zip", "pow", "type", "match")
