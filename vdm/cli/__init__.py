"""The command-line programs: vdm-run (run.py), vdm-export (export.py), vdm-eval (eval.py).

They sit above the libraries (vdm.export, vdm.runtime and the core modules) and may use any of them;
no library module imports a CLI module.
"""
