"""Built-in rules; importing this package registers them."""
from . import attention, creation, elementwise, linear, norm, recurrent, reduce, shape  # noqa: F401
