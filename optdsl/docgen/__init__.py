"""`optdsl docs`: the generated pages of docs/optimizers/."""
