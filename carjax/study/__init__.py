"""The study: train (or reuse) every model, evaluate them alike, write one report.

`runs` prepares each model's run, `measure` times and sizes the evaluated models, `report`
(`run_study`) writes the report; the other modules are its pieces (figures, tables, prose).
"""
