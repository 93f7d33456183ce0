"""Training pipeline for vsstar's STARnet models (data, flow cache, objectives, loop, export, evaluation).

Entry points: ``python -m training.train``, ``python -m training.evaluate``, ``python -m training.export``,
``python -m training.report``. See docs/training.md.
"""
