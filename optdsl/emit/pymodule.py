"""Assemble the generated eager module (templates/eager.py.jinja) from the IR."""
from __future__ import annotations

from functools import lru_cache

import jinja2

from ..builtins import ESTIMATORS, REDUCTIONS
from ..ir import SHAPE_INPUTS, Kind, Let, Program, Store, Type, entries_read, shape_input_name, size_dim, walk_values
from ..plan import complex_refusal, dtensor_refusal, fused_refusal, make_plan, reads_back, reads_whole_matrix
from ..names import api_name, ident, literal, message_parts, message_source, module_name, out_name
from ..resources import data_dir
from .common import Writer, across_ranks
from .foreach import ForeachEmitter
from .loop import LoopEmitter, parts_list
from .host import emit_per_tensor_function, host_expr, lr_reaches_per_tensor_column


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )


def _indent(text: str, levels: int) -> str:
    pad = "    " * levels
    return "\n".join(pad + line if line else "" for line in text.splitlines())


def emit_eager_module(p: Program, source_name: str, spec_hash: str) -> str:
    fn = module_name(p.name)
    state_lists = [{"name": ident(s.name), "plural": ident(s.list), "key": s.storage_key} for s in p.states]
    # a hyper or flag is spelled as it is where the API shows it (constructor and functional keywords,
    # param_group keys), and through ident() inside the generated functions' bodies
    from_group = [f"{ident(h.name)} = group[{literal(api_name(h.name))}]" for h in p.hypers]
    from_group += [f"{ident(f.name)} = group[{literal(api_name(f.name))}]" for f in p.flags]
    # what the update reads from the group: the hypers, the flags, and `initial_lr` where it is read
    hyper_names = [ident(n) for n in p.group_value_names]
    group_names = [api_name(n) for n in p.group_value_names]

    # __init__: hypers and flags positionally in the spec's order, which is its reference's
    # (Program.argument_order; a Program built without one: hypers, then flags); a group state is no
    # argument, it starts at its number in every group (a default, as schedulefree keeps its own)
    declared = {h.name: f"{api_name(h.name)}={literal(h.default)}" for h in p.hypers if not h.group_state}
    declared.update({f.name: f"{api_name(f.name)}: bool = {literal(f.default)}" for f in p.flags})
    order = [n for n in p.argument_order if n in declared] or list(declared)
    init_args = [declared[n] for n in order]
    arguments = [api_name(n) for n in order]
    group_state_defaults = [(api_name(h.name), literal(h.default)) for h in p.hypers if h.group_state]
    v = Writer(2)
    for line in from_group:
        v.line(line)
    for h in p.hypers:
        if h.arity and h.optional:   # before any check indexes it
            v.line(f"if {ident(h.name)} is not None:")
            with v.indent():
                v.line(f"_rt.check_tuple_length({literal(h.name)}, {ident(h.name)}, {int(h.arity)})")
        elif h.arity:
            v.line(f"_rt.check_tuple_length({literal(h.name)}, {ident(h.name)}, {int(h.arity)})")
    for h in p.hypers:
        if h.choices:
            v.line(f"if {ident(h.name)} not in {literal(h.choices)}:")
            with v.indent():
                if h.choice_message:
                    shown = message_source(message_parts(h.choice_message),
                                           lambda ref: ident(ref[0]) if ref[1] is None else f"{ident(ref[0])}[{int(ref[1])}]")
                else:
                    listing = ", ".join(repr(c) for c in h.choices)
                    shown = f"{literal(api_name(h.name) + ' must be one of ' + listing + ', not ')} + repr({ident(h.name)})"
                v.line(f"raise ValueError({shown})")
        for cond, message, (name, index) in h.checks:
            shown = ident(name) if index is None else f"{ident(name)}[{int(index)}]"
            given = f"{ident(h.name)} is not None and " if h.optional else ""   # None: an optional hyper left out
            given += "".join(f"{ident(h.name)}[{i}] is not None and " for i in sorted(entries_read(cond, h.name)
                                                                                     & h.optional_entries))
            v.line(f"if {given}not {host_expr(cond)}:")
            with v.indent():
                prefix = message.replace("{}", "\x00").replace("{", "{{").replace("}", "}}").replace("\x00", "{" + shown + "}")
                v.line(f"raise ValueError(f{literal(prefix)})")
    for cond, message in p.requires:
        if cond.kind is Kind.TENSOR_SCALAR:   # on the param's shape: _check_params
            continue
        v.line(f"if not {host_expr(cond)}:")
        with v.indent():
            shown = message_source(message_parts(message),
                                   lambda ref: ident(ref[0]) if ref[1] is None else f"{ident(ref[0])}[{int(ref[1])}]")
            v.line(f"raise ValueError({shown})")

    # _active_states
    a = Writer(2)
    for line in from_group:
        a.line(line)
    a.line("active = {}")
    for s in p.states:
        if s.kind is Kind.TENSOR_SCALAR:
            init = f"({literal('scalar')}, {host_expr_init(s.init)})"
        elif s.kind is Kind.REDUCED:
            init = f"({literal('device_scalar')}, {host_expr_init(s.init)})"
        elif s.init in ("zeros", "empty"):
            init = literal(s.init)
        else:
            init = f"({literal('fill')}, {host_expr_init(s.init)})"
        if s.per_tensor_cond:   # decided per tensor, on its shape, when its state is made
            shapes = sorted({shape_input_name(n) for n in walk_values(s.cond) if n.op in SHAPE_INPUTS})
            a.line(f"active[{literal(s.storage_key)}] = _rt.PerTensor({init}, "
                   f"lambda {', '.join(shapes)}: {host_expr(s.cond)}, {literal(tuple(shapes))})")
        elif s.cond is not None:
            a.line(f"if {host_expr(s.cond)}:")
            with a.indent():
                a.line(f"active[{literal(s.storage_key)}] = {init}")
        else:
            a.line(f"active[{literal(s.storage_key)}] = {init}")
    a.line("return active")

    g = Writer(2)
    if p.group_update:
        for line in from_group + ([f"initial_lr = group[{literal('initial_lr')}]"] if p.reads_initial_lr else []):
            g.line(line)
        for st in p.group_update:
            name = st.name if isinstance(st, Let) else st.target
            g.line(f"{ident(name)} = {host_expr(st.value)}")
            if isinstance(st, Store):
                g.line(f"group[{literal(api_name(name))}] = {ident(name)}")

    inputs = "{" + ", ".join(
        f"{literal(p.state(name).storage_key)}: ({literal(estimator)}, {{"
        + ", ".join(f"{literal(role)}: {literal(api_name(arg))}" for (role, _), arg in zip(ESTIMATORS[estimator], args))
        + "})" for name, estimator, args in p.inputs) + "}" if p.inputs else ""
    step_paths = eager_paths(p, fn)
    mode_paths = [eager_paths(p.mode_program(m), f"{fn}_{m}", mode=m) for m, _ in p.modes]

    doc = p.doc or p.name
    return environment().get_template("eager.py.jinja").render(
        source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name), fn=fn,
        doc_text=_doc_line(doc), doc_literal=literal(doc),
        state_names=literal(tuple(s.storage_key for s in p.states)),
        empty_states=literal(tuple(s.storage_key for s in p.states if s.init == "empty")),
        uses_step=p.uses_step, uses_step_literal=literal(p.uses_step), step_per_group=p.step_per_group, sparse=p.sparse, step_as_int=p.step_as_int,
        reads_initial_lr=p.reads_initial_lr, init_args=init_args,
        validation=v.text() if len(v.lines) > len(from_group) else "        pass",
        default_names=arguments, group_state_defaults=group_state_defaults, group_update=g.text(),
        api_names=group_names, hyper_kwargs=list(zip(hyper_names, group_names)),
        active_states=a.text(), state_lists=state_lists,
        step_paths=step_paths, mode_paths=mode_paths, inputs=inputs,
        has_lr=any(h.name == "lr" for h in p.hypers),
        foreach_lr_per_tensor=literal(step_paths["lr_per_tensor"]),
        fused_refused=literal(fused_refusal(p)) if fused_refusal(p) else "", reads_back=reads_back(p),
        shaped_states="{" + ", ".join(f"{literal(s.storage_key)}: {literal(s.shape)}" for s in p.states if s.shape) + "}"
        if any(s.shape for s in p.states) else "",
        dtensor_refused=literal(dtensor_refusal(p)) if dtensor_refusal(p) else "",
        no_complex=complex_refusal(p),
        per_tensor_requires=per_tensor_requires(p),
        per_tensor_states=literal(tuple(s.storage_key for s in p.states if s.per_tensor_cond)),
    )


def per_tensor_requires(p: Program) -> str:
    """The body of `_check_params(group)`: each `require` on the param's shape (`require ndim == 2`),
    for every param of the group; "" where the spec has none."""
    requires = [(cond, message) for cond, message in p.requires if cond.kind is Kind.TENSOR_SCALAR]
    if not requires:
        return ""
    w = Writer(2)
    for h in p.hypers:
        w.line(f"{ident(h.name)} = group[{literal(api_name(h.name))}]")
    for f in p.flags:
        w.line(f"{ident(f.name)} = group[{literal(api_name(f.name))}]")
    shown = {"shape": "_p.size()", "ndim": "_p.ndim", "numel": "_p.numel()"}   # as torch's messages print them
    w.line("for _p in group['params']:")
    with w.indent():
        for name in sorted({shape_input_name(n) for cond, _ in requires for n in walk_values(cond) if n.op in SHAPE_INPUTS}):
            w.line(f"{name} = _rt.shape_input([_p], {literal(name)}, real_view=False)[0]")
        for cond, message in requires:
            w.line(f"if not {host_expr(cond)}:")
            with w.indent():
                text = message_source(message_parts(message), lambda ref: shown[ref[0]] if ref[0] in shown and ref[1] is None
                                      else ident(ref[0]) if ref[1] is None else f"{ident(ref[0])}[{int(ref[1])}]")
                w.line(f"raise ValueError({text})")
    return w.text()


def eager_paths(p: Program, fn: str, mode: str | None = None) -> dict:
    """What the template's loop and foreach functions `_single_tensor_<fn>` and `_multi_tensor_<fn>`
    render, from the loop and foreach plans of `p`: the update, or (`mode`) an `on` block's
    program, whose functions take no grads and no steps."""
    loop_plan, foreach_plan = make_plan(p, "loop"), make_plan(p, "foreach")
    hoisted, cols = foreach_plan.program, list(foreach_plan.columns)
    hyper_names = [ident(n) for n in p.group_value_names]
    tensor_states = [ident(s.name) for s in p.states if s.kind is Kind.TENSOR]
    tensor_lists = [ident(s.list) for s in p.states if s.kind is Kind.TENSOR]
    inputs_of = ["params"] + ([] if mode else ["grads"])
    signature_parts = inputs_of + [ident(s.list) for s in p.states]
    if p.uses_step:
        signature_parts.append("state_steps")
    signature = ", ".join(signature_parts) + ", *, " + "".join(f"{n}, " for n in hyper_names) + "capturable=False"
    call = ", ".join(signature_parts) + "".join(f", {n}={n}" for n in hyper_names) + ", capturable=capturable"

    loop_phases = []
    for phase in loop_plan.phases.phases:   # one loop over the tensors per phase
        loop = Writer(2)
        LoopEmitter(p, phase).body(phase.body, loop)
        sinks = loop_plan.phases.sinks_of(phase)
        loop_phases.append({
            "first": phase.index == 0,
            "body": loop.text() or "        pass",
            "before": [f"{parts_list(n)} = [None] * len(params)" for n, _ in sinks],
            "after": [f"{ident(n)} = {group_combine(n, v)}" for n, v in sinks],
        })

    fe = ForeachEmitter(hoisted, cols)
    fe.w.level = 1
    if not foreach_plan.tensor_at_a_time:
        fe.body(hoisted.body)
    fc = Writer(1)
    for j, c in enumerate(cols):
        if c.kind is Kind.TENSOR_SCALAR and c.type is Type.NUM:
            fc.line(f"{ident(c.name)} = _rt.column(per_tensor, {j})")
        else:
            fc.line(f"{ident(c.name)} = per_tensor[0][{j}]")
    uniform = [j for j, c in enumerate(cols) if c.kind is Kind.TENSOR_SCALAR and c.type is Type.BOOL]

    inputs = []
    if p.uses_step:
        inputs.append("steps")
    inputs += [f"_rt.shape_input(params, {literal(name)})" for name in foreach_plan.shape_inputs]
    inputs += [f"_rt.host_values({ident(p.list_name(n))}, capturable)" for n in foreach_plan.scalar_states]
    inputs += [f"[t is None for t in {ident(s.list)}]" for s in p.states if s.init == "empty"]
    wb = Writer(1)
    for k, n in enumerate(foreach_plan.scalar_states):
        wb.line(f"for _s, _value in zip({ident(p.list_name(n))}, _rt.column(per_tensor, {len(cols) + k})):")
        with wb.indent():
            wb.line("if _s is not None:   # None: a conditional state this group does not keep")
            with wb.indent():
                wb.line("_s.fill_(_value)")
    views = ["param"] + ([] if mode else ["grad"]) + tensor_states
    view_lists = ["params"] + ([] if mode else ["grads"]) + tensor_lists
    return {
        "fn": fn, "mode": mode, "signature": signature, "call": call, "uses_step": p.uses_step,
        "lr_per_tensor": lr_reaches_per_tensor_column(hoisted),
        "reads_grad": mode is None,
        "state_lists": [{"name": ident(s.name), "plural": ident(s.list)} for s in p.states],
        "views": ", ".join(views) + ("," if len(views) == 1 else ""),
        "view_lists": ", ".join(view_lists) + ("," if len(view_lists) == 1 else ""),
        "loop_phases": loop_phases,
        "loop_shape_inputs": [(name, LOOP_SHAPE_INPUTS.get(name) or f"_rt.size(param, {size_dim(name)})")
                              for name in loop_plan.shape_inputs],
        # (host math after an item() is the loop path's: the foreach path takes its tensors one at a time)
        "per_tensor_fn": "" if reads_back(p) or reads_whole_matrix(p) else emit_per_tensor_function(hoisted, f"_{fn}_per_tensor", cols),
        "per_tensor_inputs": ", ".join(inputs),
        "per_tensor_kwargs": ", ".join(f"{n}={n}" for n in hyper_names),
        "uniform_columns": literal(tuple(uniform)) if uniform else "",
        "foreach_selects_in_loop": selects_per_tensor(p),
        "foreach_columns": fc.text(), "foreach_body": fe.w.text(),
        "foreach_runs_loop": foreach_plan.tensor_at_a_time, "at_a_time_reason": foreach_plan.at_a_time_reason, "scalar_writeback": wb.text(),
        "empty_state_lists": [{"plural": ident(s.list), "out": out_name(s.list)} for s in p.states if s.init == "empty"],
        "capturable_scalars": "".join([", scalar_states={"] + [
            f"{literal(ident(p.list_name(n)))}: {ident(p.list_name(n))}" + (", " if k + 1 < len(foreach_plan.scalar_states) else "")
            for k, n in enumerate(foreach_plan.scalar_states)] + ["}"]) if foreach_plan.scalar_states else "",
    }


def selects_per_tensor(p) -> bool:
    """Whether the loop path converts a per-tensor `if` on the step or a scalar state into selects
    (optdsl.selects) when capturable or traced: the foreach path then takes its tensors one at a
    time there, rather than branch on a tensor for the whole group."""
    from ..ir import If, walk_stmts
    from ..selects import Selector
    selector = Selector(p, p.body)
    return any(isinstance(s, If) and s.cond.kind is Kind.TENSOR_SCALAR and selector.applies(s) for s in walk_stmts(p.body))


# The loop path's per-tensor shape inputs, read off the tensor at hand (a complex one's real view).
LOOP_SHAPE_INPUTS = {"numel": "param.numel()", "ndim": "param.dim()", "channel_numel": "_rt.channel_numel(param)",
                     "dtype_eps": "torch.finfo(param.dtype).eps"}


def group_combine(name: str, v) -> str:
    """The loop path's value of group reduction `name` from its per-tensor parts (fixed order)."""
    value = REDUCTIONS[v.op].combine.format(parts=f"_rt.group_parts({parts_list(name)}, params)",
                                            n="_rt.group_numel(params)")
    return across_ranks(value, v)



def host_expr_init(init) -> str:
    if init == "zeros":   # `state s: scalar = zeros`
        return literal(0.0)
    if isinstance(init, str):
        return ident(init)
    return literal(float(init))


def _doc_line(doc: str) -> str:
    # the module docstring is a literal; keep only characters that cannot end it
    return doc.replace("\\", "/").replace('"""', "'''")
