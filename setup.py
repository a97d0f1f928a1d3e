"""Install the Semantic-ID ranking system (also shipped to Beam workers via --setup_file)."""

import setuptools

# The TensorFlow family must move together: these versions are tested as one set.
TF_FAMILY = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "apache-beam==2.77.0",
    "tensorflow-recommenders==0.7.7",
    # tfx-bsl 1.21 pins the serving protos to 2.19.x; they speak the same gRPC API.
    "tensorflow-serving-api>=2.19,<2.20",
    # TensorFlow 2.21 no longer pulls TensorBoard in; the day loop writes TensorBoard logs.
    "tensorboard>=2.20,<2.21",
]

setuptools.setup(
    name="sidrec",
    version="0.1.0",
    description="Semantic IDs for ranking: RQ-VAE tokenizer, Beam/TF Transform pipelines, "
    "TFRS multitask ranker and TF Serving export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["pipeline*", "models*", "beam_jobs*", "serving*"]),
    install_requires=TF_FAMILY + [
        "sentencepiece>=0.2.0",
        "numpy",
        "pandas",
        "pyarrow",
        "matplotlib",
        "tzdata",  # time zones for `sidrec import --timezone` where the system has none
        "scipy",  # LSQR: the warm start's least-squares item table (pipeline/stages/warm_start.py)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout", "pytest-xdist"],
        # DataflowRunner needs Beam's GCP I/O; not needed for DirectRunner.
        "gcp": ["apache-beam[gcp]==2.77.0"],
    },
    entry_points={"console_scripts": ["sidrec=pipeline.cli:main"]},
)
