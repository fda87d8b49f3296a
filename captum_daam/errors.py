"""Exceptions raised by captum-daam."""


class UnsupportedModelError(ValueError):
    """The model's architecture is not one DAAM knows how to decompose.

    The message names the model class and what is supported; docs/models.md lists the
    supported families.
    """
