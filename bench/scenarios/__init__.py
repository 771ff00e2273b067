"""The bench scenarios, one module each; bench/run.py runs them all."""
