"""Built-in rules; importing this package registers them."""
from . import (attention, binary, creation, elementwise, indexing, joining, linear, norm, recurrent, reduce,  # noqa: F401
               reshape)
