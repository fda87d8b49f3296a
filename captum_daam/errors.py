"""Exceptions raised by captum-daam.

Every error a user can cause derives from :class:`DAAMError`, and every message names the
problem and the fix. The classes also derive from the built-in exception a Python user
would expect (``ValueError``, ``TypeError``), so ``except ValueError`` keeps working::

    DAAMError
    ├── UnsupportedModelError   (ValueError)  the model's architecture is not supported
    ├── InvalidInputError       (ValueError)  bad images, targets, options or arguments
    │   ├── InvalidInputTypeError (TypeError) ... of the wrong type
    │   └── NonFiniteScoresError (FloatingPointError) the model scored NaN or infinity
    └── InvalidFileError        (ValueError)  a bank, weights or image file that cannot
                                              be read or is not what it should be
"""


class DAAMError(Exception):
    """Base class of every error captum-daam raises for something the user can fix."""


class UnsupportedModelError(DAAMError, ValueError):
    """The model's architecture is not one DAAM knows how to decompose.

    The message names the model class and what is supported; docs/models.md lists the
    supported families.
    """


class InvalidInputError(DAAMError, ValueError):
    """Inputs, targets, options or arguments that cannot be used; the message says which
    and how to fix them."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """An input or argument of the wrong type (also a ``TypeError``)."""


class NonFiniteScoresError(InvalidInputError, FloatingPointError):
    """The model produced NaN or infinite scores for these inputs (also a
    ``FloatingPointError``): check the inputs and, in float16, try bfloat16 or float32."""


class InvalidFileError(DAAMError, ValueError):
    """A file the user named (a memory bank, model weights, an image) that cannot be read
    or does not hold what it should: truncated, corrupt, of another format, unsafe to
    load, or too large."""


__all__ = [
    "DAAMError",
    "InvalidFileError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "NonFiniteScoresError",
    "UnsupportedModelError",
]
