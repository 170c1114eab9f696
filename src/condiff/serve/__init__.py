"""``condiff serve``: a trained model behind an HTTP API and a web page (the ``serve`` extra)."""
