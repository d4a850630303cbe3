"""Data layer: task sets (TFDS builders), episode sampling, augmentation.

Importing this package is cheap: TensorFlow Datasets is imported only when a
dataset is built or read.
"""
from bil_jax.data.registry import load_tasks
from bil_jax.data.registry import register
from bil_jax.data.tasks import TaskSet
