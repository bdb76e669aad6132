"""``transduce serve``: the HTTP/WebSocket app over the library (``app.py``), dynamic batching of translate
requests (``translation.py``), the live-stream hub over ``streaming/batch.py`` (``streams.py``), limits
(``limits.py``), Prometheus metrics (``metrics.py``), feedback (``feedback.py``) and the web page (``page.py``).
Nothing here is imported by the library; the server only calls it."""
