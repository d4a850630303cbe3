"""bil_jax: the BiLevel image-to-image translation paradigm in JAX/Flax."""
import setuptools

setuptools.setup(
    name="bil_jax",
    version="0.1.0",
    description=("BiLevel (GP/IS meta-learned) image-to-image translation with "
                 "PG2 and Pix2pix GANs in JAX/Flax"),
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["bil_jax", "bil_jax.*"]),
    py_modules=[],
    python_requires=">=3.10",
    # Compatible ranges; constraints.txt holds the tested set (pip install -c constraints.txt).
    # Nothing here needs TensorFlow: prepared datasets are read (and the built-in ones
    # prepared) through tfds and ArrayRecord, summaries are written by tensorboard. On
    # GPUs/TPUs add the matching jax extra, e.g. "jax[cuda12]" or "jax[cuda13]"
    # (docs/accelerators.md).
    install_requires=[
        # 0.11 too: jax 0.11.2 and flax 0.12.10 ran the benchmark unchanged (docs/benchmark.md).
        "jax>=0.10,<0.12",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-datasets>=4.9.10,<5",
        "array-record>=0.8",  # tfds' file format, read without TensorFlow
        "importlib_resources",  # imported by tensorflow-datasets' builders
        "tensorboard>=2.21,<3",
        "numpy>=2.0",
        "scipy",
        "ml-collections>=1.1,<2",
        "clu>=0.0.12,<0.1",
        "dm-pix>=0.4.5,<0.5",
        "matplotlib",
        "absl-py",
        "pillow",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "scikit-image", "filelock", "yapf>=0.43,<0.44"],
        "torch": ["torch>=2.13,<3"],
        # TensorFlow: clu's own summary writer and datasets prepared as TFRecord files;
        # the tests need it (they compare both paths).
        "tf": ["tensorflow-cpu>=2.21,<3"],
        # FaceForensics converter: dlib 68-point landmarks and reading videos.
        "faces": ["dlib", "face_recognition_models", "imageio-ffmpeg"],
    },
    entry_points={
        "console_scripts": [
            "bil-jax=bil_jax.main:run",
            "bil-bench=bil_jax.bench.__main__:main",
        ],
    },
)
