"""The C extensions: schemas/_native_reader.pyx and schemas/_native_writer.pyx (the native Avro
reader and writer), engine/_native_kafka.pyx (Kafka's key hash, the relay direct path's envelope)
and engine/_pg_copy.pyx (rows in PostgreSQL's binary COPY format); everything else is in
pyproject.toml. `pip install -e .` (make install) builds them in place."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension("schemas._native_reader", ["schemas/_native_reader.pyx"]),
            Extension("schemas._native_writer", ["schemas/_native_writer.pyx"]),
            Extension("engine._native_kafka", ["engine/_native_kafka.pyx"]),
            Extension("engine._pg_copy", ["engine/_pg_copy.pyx"]),
        ],
        compiler_directives={"language_level": "3"},
    )
)
