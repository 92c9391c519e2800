"""Ready-made problem instances (each module builds problems or their data from a named source).

Modules are imported on demand, e.g. ``from optkit.problems.library.digits import digit_pair``; adding an
instance family is adding a module here.
"""
