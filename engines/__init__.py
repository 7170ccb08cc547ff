"""Inference engines behind one interface (installed as flexvar.engines): torch | onnxruntime |
tensorrt (| aoti, next). See base.Engine."""
from .base import Engine, open_engine

__all__ = ["Engine", "open_engine"]
