"""Training and evaluation commands: `python -m training.fit`, `python -m training.evaluate`.

Nothing is imported here, so that `training.fit` can choose the Keras backend
before Keras is imported.
"""
