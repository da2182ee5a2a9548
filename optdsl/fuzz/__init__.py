"""Fuzzing optdsl (`optdsl fuzz`): random well-typed programs through every backend against the IR
interpreter (programs.py, drawing expressions from expr.py and recipes.py; coverage.py, execute.py,
tolerance.py), hostile text through the checker (text.py), and the replay of saved reproducers
(replay.py). See docs/fuzzing.md."""
