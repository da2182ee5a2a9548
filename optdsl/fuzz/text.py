"""Hostile and broken spec text through the checker: every input must end in a CompileError
diagnostic with a line and a column inside the text, or in clean success (whose generated
sources compile) -- never another exception, never a hang, never a file written.

`mutations(seed)` yields (description, text) pairs: token and character deletes, inserts,
swaps and duplicates of the shipped specs; unicode of every kind (combining marks, RTL
overrides, zero-width and line-separator characters, lone surrogates, homoglyphs);
huge, tiny and malformed numbers; 10,000-deep nesting of every nesting construct;
10,000-long flat chains; very long identifiers; NUL bytes; CRLF and lone CR; empty and
whitespace-only files; truncations; concatenations.

`check_text(text)` runs one input and returns None or a description of what went wrong.
`check_bytes(data)` does the same through `optdsl check` on a file (undecodable bytes too).
"""
from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

TIME_LIMIT = 10.0     # seconds per input: more is a hang

UNICODE = [
    "\u00e9", "\u00df", "\u0430", "\u0435", "\u03bb", "\u2202", "\u221e", "\u00a0", "\u200b", "\u200d", "\u200e",
    "\u202e", "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u001c", "\u001d", "\u001e", "\u0301", "\u0336",
    "\ufeff", "\ufffd", "\uff10", "\uff41", "\U0001f600", "\U0001d400", "\ud800", "\udfff", "\u4e2d", "\u0661",
    "\x7f", "\x1b", "\x08", "\t", "\r", "\n", "\x00",
]
ASCII = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~ ")
TOKENS = ["optimizer", "hyper", "flag", "state", "require", "update", "where", "if", "else", "and", "or", "not",
          "true", "false", "zeros", "empty", "scalar", "key", "param", "grad", "step", "is_empty", "sqrt", "lerp",
          "where", "clamp", "max", "min", "sign", "pow", "exp", "log", "abs", "rsqrt", "(", ")", "{", "}", "[", "]",
          ",", ":", "?", "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "^", "0", "1", "0.5", "1e-8",
          "\"doc\"", "\"", "#", "lr", "betas", "exp_avg", "__import__", "self", "torch", "tl", "import", "lambda",
          "def", "class", "print", "os", "eval", "exec", "None", "True", "False", "Adam", "x", "_x", "X"]
NUMBERS = ["1e400", "-1e400", "1e-400", "1e308", "1.7976931348623157e308", "4.9e-324", "0" * 5000 + "1",
           "9" * 5000, "9" * 5000 + ".5", "1" + "0" * 400, "1e999999999999", "1e", "1e+", ".", "1..2", "0x10",
           "1_000", "NaN", "inf", "-0", "-0.0", "0e0", "00", "007", "1.e5", ".5e-3", "１", "٣", "1" * 30]
TOKEN_RE = re.compile(r'"[^"\n]*"|#[^\n]*|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|[A-Za-z_][A-Za-z0-9_]*|<=|>=|==|!=|\S|\s+')


def shipped_texts() -> list[tuple[str, str]]:
    from ..resources import data_dir
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(data_dir("specs").glob("*.opt"))]


def _deep(rng: random.Random, n: int) -> str:
    """A spec whose one expression or block nests n levels deep (or chains n terms)."""
    kind = rng.choice(["paren", "neg", "not", "call", "pow", "sum", "or", "and", "cmp", "ternary", "if", "block",
                       "index", "where", "mul", "tuple", "args"])
    head = 'optimizer Deep "d"\nhyper lr = 0.1\nflag f = true\nupdate {\n'
    tail = "\n}\n"
    if kind == "paren":
        e = "(" * n + "grad" + ")" * n
    elif kind == "neg":
        e = "-" * n + "grad"
    elif kind == "not":
        e = "not " * n + "f ? grad : param"
    elif kind == "call":
        e = "abs(" * n + "grad" + ")" * n
    elif kind == "pow":
        e = "grad ^ " * n + "1"
    elif kind == "sum":
        e = "grad" + " + grad" * n
    elif kind == "mul":
        e = "grad" + " * 1" * n
    elif kind == "or":
        e = "(" + " or ".join(["f"] * n) + ") ? grad : param"
    elif kind == "and":
        e = "(" + " and ".join(["f"] * n) + ") ? grad : param"
    elif kind == "cmp":
        e = "(" + " < ".join(["lr"] * n) + ") ? grad : param"
    elif kind == "ternary":
        e = "f ? grad : " * n + "param"
    elif kind == "where":
        e = "where(f, grad, " * n + "param" + ")" * n
    elif kind == "index":
        e = "lr" + "[0]" * n
    elif kind == "tuple":
        return 'optimizer Deep\nhyper b = (' + ", ".join(["0.5"] * n) + ')\nupdate { param = param - b[0] * grad }\n'
    elif kind == "args":
        e = "max(" + ", ".join(["grad"] * n) + ")"
    elif kind == "if":
        return head + "if f { " * n + "param = param - lr * grad" + " }" * n + tail
    else:
        return head + "x = grad\n" * n + "param = param - lr * x" + tail
    return head + f"param = param - lr * ({e})" + tail


def _long_name(rng: random.Random) -> str:
    n = rng.choice([65, 100, 1000, 100000, 1 << 20])
    name = "a" * n
    where = rng.choice(["hyper", "local", "class", "state", "flag"])
    if where == "class":
        return f'optimizer A{name}\nupdate {{ param = param - 0.1 * grad }}\n'
    if where == "hyper":
        return f'optimizer A\nhyper {name} = 0.1\nupdate {{ param = param - {name} * grad }}\n'
    if where == "state":
        return f'optimizer A\nstate {name} = zeros\nupdate {{ {name} = grad\n param = param - 0.1 * {name} }}\n'
    if where == "flag":
        return f'optimizer A\nflag {name} = true\nupdate {{ param = param - 0.1 * grad }}\n'
    return f'optimizer A\nupdate {{ {name} = grad\n param = param - 0.1 * {name} }}\n'


def mutate(rng: random.Random, base: str) -> tuple[str, str]:
    """One random mutation of `base`: (what was done, the text)."""
    op = rng.choice(["del_char", "ins_char", "swap_char", "del_token", "ins_token", "swap_token", "dup_token",
                     "replace_token", "number", "unicode", "nul", "crlf", "cr", "truncate", "concat", "deep",
                     "long_name", "empty", "dup_line", "del_line", "case", "multi"])
    text = base
    if op == "multi":
        desc = []
        for _ in range(rng.randint(2, 6)):
            d, text = mutate(rng, text)
            if d.startswith(("deep", "long_name", "empty")):
                continue
            desc.append(d)
        return "multi(" + ", ".join(desc) + ")", text
    if op in ("del_char", "ins_char", "swap_char", "unicode", "nul") and not text:
        text = " "
    pos = rng.randrange(len(text) + 1) if text else 0
    if op == "del_char":
        n = rng.randint(1, 4)
        return f"delete {n} chars at {pos}", text[:pos] + text[pos + n:]
    if op == "ins_char":
        ch = "".join(rng.choice(ASCII) for _ in range(rng.randint(1, 3)))
        return f"insert {ch!r} at {pos}", text[:pos] + ch + text[pos:]
    if op == "swap_char" and len(text) > 1:
        i, j = sorted(rng.sample(range(len(text)), 2))
        return f"swap chars {i} and {j}", text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
    if op == "unicode":
        ch = rng.choice(UNICODE)
        return f"insert {ch!r} at {pos}", text[:pos] + ch + text[pos:]
    if op == "nul":
        return f"insert NUL at {pos}", text[:pos] + "\x00" + text[pos:]
    if op == "crlf":
        return "CRLF line ends", text.replace("\n", "\r\n")
    if op == "cr":
        return "CR line ends", text.replace("\n", "\r")
    if op == "truncate":
        return f"truncate at {pos}", text[:pos]
    if op == "concat":
        return "spec twice", text + "\n" + text
    if op == "deep":
        n = rng.choice([200, 201, 1000, 10000])
        return f"{n}-deep nesting", _deep(rng, n)
    if op == "long_name":
        return "long identifier", _long_name(rng)
    if op == "empty":
        return "empty-ish file", rng.choice(["", " ", "\n", "\r\n", "\t\n  ", "# only a comment", "\ufeff",
                                              "\ufeff\n", "optimizer", "optimizer A", "\x00", "update {}"])
    lines = text.split("\n")
    if op == "dup_line" and lines:
        i = rng.randrange(len(lines))
        return f"duplicate line {i + 1}", "\n".join(lines[:i + 1] + lines[i:])
    if op == "del_line" and lines:
        i = rng.randrange(len(lines))
        return f"delete line {i + 1}", "\n".join(lines[:i] + lines[i + 1:])
    if op == "case":
        return "swap case", text.swapcase() if rng.random() < 0.3 else text[:pos] + text[pos:].upper()
    tokens = TOKEN_RE.findall(text)
    words = [i for i, t in enumerate(tokens) if not t.isspace()]
    if not words:
        return "unchanged", text
    i = rng.choice(words)
    if op == "del_token":
        return f"delete token {tokens[i]!r}", "".join(tokens[:i] + tokens[i + 1:])
    if op == "ins_token":
        t = rng.choice(TOKENS)
        return f"insert token {t!r}", "".join(tokens[:i] + [t, " "] + tokens[i:])
    if op == "dup_token":
        return f"duplicate token {tokens[i]!r}", "".join(tokens[:i + 1] + [" "] + tokens[i:])
    if op == "swap_token" and len(words) > 1:
        a, b = sorted(rng.sample(words, 2))
        tokens[a], tokens[b] = tokens[b], tokens[a]
        return "swap two tokens", "".join(tokens)
    if op == "number":
        nums = [k for k in words if re.fullmatch(r"\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+", tokens[k])]
        k = rng.choice(nums) if nums else i
        n = rng.choice(NUMBERS)
        return f"number {tokens[k]!r} -> {n[:20]!r}", "".join(tokens[:k] + [n] + tokens[k + 1:])
    t = rng.choice(TOKENS)
    return f"replace token {tokens[i]!r} with {t!r}", "".join(tokens[:i] + [t] + tokens[i + 1:])


def mutations(seed: int, count: int, bases: list[tuple[str, str]] | None = None):
    """`count` (name, description, text) triples, reproducible from `seed`."""
    rng = random.Random(seed)
    bases = bases or shipped_texts()
    for k in range(count):
        name, base = bases[k % len(bases)]
        desc, text = mutate(rng, base)
        yield name, desc, text


# ---- running one input --------------------------------------------------------------------------


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang in the main thread after `seconds` (SIGALRM; elsewhere: no limit, time measured)."""
    use = hasattr(signal, "setitimer") and _main_thread()
    if use:
        def handler(signum, frame):
            raise Hang(f"no answer after {seconds:g} s")
        old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if use:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _lines(text: str) -> list[str]:
    return text.split("\n")


def check_diagnostics(err, text: str, file: str) -> str | None:
    """A CompileError must carry diagnostics with a real line and column, and render."""
    if not err.diagnostics:
        return "CompileError without diagnostics"
    lines = _lines(text)
    for d in err.diagnostics:
        sp = d.span
        if sp.line < 1 or sp.col < 1:
            return f"diagnostic without a line/column: {sp} {d.message!r}"
        if sp.line > len(lines) + 1:
            return f"diagnostic line {sp.line} beyond the text's {len(lines)} lines: {d.message!r}"
        if sp.line <= len(lines) and sp.col > len(lines[sp.line - 1]) + 2:
            return f"diagnostic column {sp.col} beyond line {sp.line} ({len(lines[sp.line - 1])} chars): {d.message!r}"
        if sp.file != file:
            return f"diagnostic names file {sp.file!r}, not {file!r}"
        if not d.message or not d.message.strip():
            return "empty diagnostic message"
    rendered = err.render()
    if not isinstance(rendered, str) or not rendered.startswith(f"{file}:"):
        return f"diagnostic renders oddly: {rendered[:100]!r}"
    for line in rendered.split("\n"):
        if len(line) > 400:
            return f"a rendered diagnostic line of {len(line)} characters"
    return None


def check_text(text: str, file: str = "mutant.opt", limit: float = TIME_LIMIT) -> tuple[str, str | None]:
    """('ok' | 'diagnostic' | 'failure', what went wrong or None)."""
    from ..compiler import compile_spec
    from ..diagnostics import CompileError
    start = time.perf_counter()
    try:
        with time_limit(limit):
            compiled = compile_spec(text, file)
    except CompileError as err:
        problem = check_diagnostics(err, text, file)
        return ("failure", problem) if problem else ("diagnostic", None)
    except Hang as err:
        return "failure", f"hang: {err}"
    except RecursionError:
        return "failure", "RecursionError:\n" + traceback.format_exc(limit=-6)
    except Exception:
        return "failure", traceback.format_exc(limit=-8)
    elapsed = time.perf_counter() - start
    for name, src in (("eager", compiled.eager_source), ("triton", compiled.triton_source)):
        try:
            compile(src, f"<{name} source>", "exec")
        except SyntaxError as err:
            return "failure", f"generated {name} source does not compile: {err}"
    if elapsed > limit:
        return "failure", f"slow: {elapsed:.1f} s"
    return "ok", None


def check_bytes(data: bytes, limit: float = TIME_LIMIT) -> tuple[str, str | None]:
    """Through `optdsl check FILE`: exit 0 or 1 with a diagnostic, no traceback."""
    from ..checkfiles import check_files
    with tempfile.TemporaryDirectory(prefix="optdsl-text-") as tmp:
        path = Path(tmp) / "mutant.opt"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        try:
            with time_limit(limit), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = check_files([str(path)])
        except Hang as e:
            return "failure", f"hang: {e}"
        except BaseException:
            return "failure", "optdsl check raised:\n" + traceback.format_exc(limit=-8)
        printed = err.getvalue()
        if status not in (0, 1):
            return "failure", f"optdsl check exited {status}"
        if status == 1 and not re.search(r":\d+:\d+: error: ", printed):
            return "failure", f"optdsl check failed without a line:column diagnostic: {printed[:300]!r}"
        if "Traceback" in printed:
            return "failure", "a traceback was printed"
        return ("diagnostic" if status else "ok"), None


@dataclass
class TextReport:
    inputs: int = 0
    ok: int = 0
    diagnostics: int = 0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)   # (base, description, text, problem)
    slowest: tuple[float, str] = (0.0, "")
    seconds: float = 0.0
    files_written: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.inputs} text inputs: {self.ok} compiled, {self.diagnostics} diagnosed, "
                f"{len(self.failures)} failures; slowest {self.slowest[0]:.2f} s ({self.slowest[1]}); "
                f"{self.seconds:.1f} s")


def run(seed: int, count: int, deadline: float | None = None, bytes_every: int = 25,
        bases: list[tuple[str, str]] | None = None, on_input=None) -> TextReport:
    """Run `count` mutations (every `bytes_every`-th also as raw bytes through `optdsl check`), in an
    empty working directory, and report; a file appearing there or in the cache is a failure.
    `on_input(report)`, if given, is called after each input (the progress bar)."""
    report = TextReport()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="optdsl-textfuzz-") as tmp:
        cwd = os.getcwd()
        cache = Path(tmp) / "cache"
        work = Path(tmp) / "work"
        work.mkdir()
        saved_cache = os.environ.get("OPTDSL_CACHE")
        os.environ["OPTDSL_CACHE"] = str(cache)
        os.chdir(work)
        try:
            rng = random.Random(seed ^ 0x5EED)
            for k, (base, desc, text) in enumerate(mutations(seed, count, bases)):
                if deadline is not None and time.perf_counter() > deadline:
                    break
                t0 = time.perf_counter()
                verdict, problem = check_text(text)
                if verdict != "failure" and bytes_every and k % bytes_every == 0:
                    data = text.encode("utf-8", "surrogatepass")
                    if rng.random() < 0.3 and data:   # and some bytes that are not UTF-8 at all
                        i = rng.randrange(len(data) + 1)
                        data = data[:i] + bytes([rng.choice([0x80, 0xC0, 0xFF, 0xFE, 0xED])]) + data[i:]
                    verdict2, problem2 = check_bytes(data)
                    if verdict2 == "failure":
                        verdict, problem = verdict2, problem2
                dt = time.perf_counter() - t0
                report.inputs += 1
                if dt > report.slowest[0]:
                    report.slowest = (dt, f"{base}: {desc}"[:120])
                if verdict == "ok":
                    report.ok += 1
                elif verdict == "diagnostic":
                    report.diagnostics += 1
                else:
                    report.failures.append((base, desc, text, problem or ""))
                written = [str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file()]
                if written:
                    report.failures.append((base, desc, text, f"files written: {written}"))
                    report.files_written += written
                    for p in Path(tmp).rglob("*"):
                        if p.is_file():
                            p.unlink()
                if on_input is not None:
                    on_input(report)
        finally:
            os.chdir(cwd)
            if saved_cache is None:
                os.environ.pop("OPTDSL_CACHE", None)
            else:
                os.environ["OPTDSL_CACHE"] = saved_cache
    report.seconds = time.perf_counter() - start
    return report
