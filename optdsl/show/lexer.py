"""A Pygments lexer for `.opt` specs (registered under the `pygments.lexers` entry point, so
`pygmentize -l opt spec.opt` works once optdsl is installed). Its words come from the grammar
(grammars/optdsl.lark) and the builtins table (optdsl.builtins), so a new builtin is highlighted
without touching this file."""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

from ..builtins import FUNCTIONS, INPUTS, NONE, REDUCTION_FUNCTIONS, SHAPE_FUNCTIONS, STATE_PREDICATES
from ..ir import SCOPES

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# NUMBER_LIT of the grammar
NUMBER = r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"

DECLARATIONS = ("hyper", "flag", "state")
KEYWORDS = ("update", "require", "keep", "if", "else", "where", "key")
STATE_INITS = ("zeros", "empty", "scalar")
BUILTINS = tuple(sorted({*FUNCTIONS, *REDUCTION_FUNCTIONS, *SHAPE_FUNCTIONS, *STATE_PREDICATES}))
INPUT_NAMES = tuple(sorted(INPUTS))


class OptLexer(RegexLexer):
    name = "optdsl"
    aliases = ["opt", "optdsl"]
    filenames = ["*.opt"]
    mimetypes = ["text/x-optdsl"]

    tokens = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\r\n]*", Comment.Single),
            (r'"[^"\\\n\r]*"', String.Double),
            (rf"(optimizer)(\s+)({IDENT})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"({'|'.join(DECLARATIONS)})(\s+)({IDENT})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            # before the keywords: `where(c, a, b)` is the builtin, `hyper x = 1 where x > 0` the keyword
            (words(BUILTINS, suffix=r"\b(?=\s*\()"), Name.Builtin),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(("and", "or", "not"), suffix=r"\b"), Operator.Word),
            (words(("true", "false", NONE), suffix=r"\b"), Keyword.Constant),
            (words(STATE_INITS, suffix=r"\b"), Keyword.Pseudo),
            (words(INPUT_NAMES + SCOPES, suffix=r"\b"), Name.Builtin.Pseudo),
            (IDENT, Name),
            (rf"{NUMBER}(?![A-Za-z0-9_])", Number.Float),
            (r"<=|>=|==|!=|[<>+\-*/^?:=|]", Operator),
            (r"[(){}\[\],]", Punctuation),
        ],
    }
