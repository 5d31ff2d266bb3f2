"""The analysis steps `ontogeny analyze` runs: one module each, registered with `@analysis_step`.

A new step is a new module here (its registration is found by importing the package's modules); it reads a
`Context` and returns a `StepResult`.
"""
