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
    # Known-good versions on Python 3.11 (CPU). For GPUs/TPUs add the matching jax extra,
    # e.g. pip install "jax[cuda12]==0.10.2" (see README).
    install_requires=[
        "jax==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "tensorflow-cpu==2.21.0",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",  # imported by tensorflow-datasets' builders
        "tensorboard",
        "numpy",
        "scipy",
        "ml-collections==1.1.0",
        "clu==0.0.12",
        "dm-pix==0.4.5",
        "matplotlib",
        "absl-py",
        "pillow",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "scikit-image", "filelock"],
        "torch": ["torch==2.13.0"],
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
