"""Keras must know its backend before it is first imported: the torch one (no TensorFlow here)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
