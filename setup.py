"""The one C extension, schemas/_native_reader.pyx (the native Avro reader); everything else is in
pyproject.toml. `pip install -e .` (make install) builds it in place."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("schemas._native_reader", ["schemas/_native_reader.pyx"])],
        compiler_directives={"language_level": "3"},
    )
)
