"""Wire types: the documents the reconciler and its hosts exchange (see :mod:`wire.control`)."""
